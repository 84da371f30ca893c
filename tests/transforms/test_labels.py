"""True labels of scored records: compared with the model's classes as text whatever
their JSON type; one that is none of the model's classes is marked as such (an error
for accuracy), not dropped."""

from __future__ import annotations

import numpy as np
import pandas as pd

from tracking.profile import UNKNOWN_LABEL, has_label, label_text
from transforms.infer import _true_labels
from transforms.records import DOC_ID, LABEL, DocBatch, true_labels


def test_labels_are_compared_as_text_whatever_their_json_type() -> None:
    assert [label_text(v) for v in (3, 3.0, "3", np.int64(3), True)] == \
        ["3", "3", "3", "3", "true"]
    frame = pd.DataFrame({DOC_ID: ["a", "b", "c", "d", "e"],
                          LABEL: pd.Series([1, 2.0, "3", None, 9], dtype=object)})
    assert _true_labels(frame, np.array([1, 2, 3]), 1.0).tolist() == \
        [0, 1, 2, -1, UNKNOWN_LABEL]


def test_a_blank_label_is_no_label_at_scoring_and_in_the_files() -> None:
    """An empty CSV cell or ``"label": ""`` is no label (as training reads it:
    tests/pipelines/test_label_text.py), never a label outside the model's classes: half
    the records left blank do not make half the labels wrong."""
    assert [has_label(v) for v in (None, float("nan"), "", "  ", "\t", 0, False, "x", 2.0)] \
        == [False, False, False, False, False, True, True, True, True]
    frame = pd.DataFrame({DOC_ID: list("abcdef"),
                          LABEL: pd.Series(["1", "", "  ", None, "zz", 2], dtype=object)})
    assert _true_labels(frame, np.array([1, 2]), 1.0).tolist() == \
        [0, -1, -1, -1, UNKNOWN_LABEL, 1]
    batch = DocBatch("t", "k", frame)
    assert true_labels(batch) == ["1", None, None, None, "zz", "2"]
