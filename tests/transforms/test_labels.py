"""True labels of scored records: compared with the model's classes as text whatever
their JSON type; one that is none of the model's classes is marked as such (an error
for accuracy), not dropped."""

from __future__ import annotations

import numpy as np
import pandas as pd

from tracking.profile import UNKNOWN_LABEL, label_text
from transforms.infer import _true_labels
from transforms.records import DOC_ID, LABEL


def test_labels_are_compared_as_text_whatever_their_json_type() -> None:
    assert [label_text(v) for v in (3, 3.0, "3", np.int64(3), True)] == \
        ["3", "3", "3", "3", "true"]
    frame = pd.DataFrame({DOC_ID: ["a", "b", "c", "d", "e"],
                          LABEL: pd.Series([1, 2.0, "3", None, 9], dtype=object)})
    assert _true_labels(frame, np.array([1, 2, 3]), 1.0).tolist() == \
        [0, 1, 2, -1, UNKNOWN_LABEL]
