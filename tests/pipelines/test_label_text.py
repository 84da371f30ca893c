"""One text per label at training, in the reference and at scoring: 3, 3.0 and "3" are
one label, true is "true" (a model trained on JSON numbers or booleans is not scored as
if every label were unknown)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pipelines.commands.train import read_labelled
from tracking.profile import label_text


def test_training_reads_labels_as_scoring_compares_them(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    labels = [3, 3.0, "3", True, 1.5]
    path.write_text("".join(json.dumps({"text": f"text {i}", "label": v}) + "\n"
                            for i, v in enumerate(labels)))
    data = read_labelled(str(path), "text", "label")
    assert data.labels == ["3", "3", "3", "true", "1.5"]
    assert data.labels == [label_text(v) for v in labels]
    assert [label_text(v) for v in np.array([3.0, 2.0])] == ["3", "2"]


def test_training_skips_a_blank_label_and_a_reference_keeps_it_as_none(tmp_path: Path
                                                                       ) -> None:
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps({"text": f"text {i}", "label": v}) + "\n"
                            for i, v in enumerate(["a", "", "  ", None, "b"])))
    data = read_labelled(str(path), "text", "label")
    assert data.labels == ["a", "b"] and len(data.skipped) == 3
    data = read_labelled(str(path), "text", "label", require_label=False)
    assert data.labels == ["a", "", "", "", "b"]
