"""One text per label at training, in the reference and at scoring: 3, 3.0, "3" and
"3.0" are one label, true is "true" (a model trained on JSON numbers or booleans is not
scored as if every label were unknown, nor a CSV file's "3.0" as a label it never saw)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from landing.samples import LABELS, make_docs
from pipelines.commands.train import read_labelled
from tests.data import sqlite_rows
from tests.pipelines.helpers import run_cli
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


@given(st.integers(min_value=-10**15, max_value=10**15))
def test_a_whole_number_is_one_label_whatever_its_type_or_text(n: int) -> None:
    texts = {label_text(v) for v in (n, float(n), str(n), str(float(n)), np.int64(n),
                                     np.float64(n), f"{n}.000")}
    assert texts == {str(n)}


@given(st.text() | st.sampled_from(["True", " false ", "TRUE", "+3", " +3.00 ", "007",
                                      "007.0", "+-3", "billing ", "\tTrue\n"]))
def test_a_text_is_its_own_label_unless_a_whole_number_or_a_boolean_written_otherwise(
        text: str) -> None:
    """The blanks around a text aside: "3.0", "+3" and "+3.0" are "3"; "True", "TRUE"
    and "false" are "true" and "false" (as JSON's booleans); any other text is itself
    ("007" too)."""
    text_ = text.strip()
    head, dot, tail = text_.partition(".")
    plus = head[:1] == "+"
    signed = head[1:] if plus else head
    digits = signed[1:] if signed[:1] == "-" else signed
    number = digits != "" and all(c in "0123456789" for c in digits) and (
        (dot == "" and plus) or (dot == "." and tail != "" and set(tail) == {"0"}))
    if number:
        expected = str(int(digits) * (-1 if signed[:1] == "-" else 1))
    elif text_.lower() in ("true", "false"):
        expected = text_.lower()
    else:
        expected = text_
    assert label_text(text) == expected


def test_a_boolean_label_is_one_label_however_a_file_writes_it() -> None:
    assert {label_text(v) for v in (True, np.bool_(True), "True", "true", "TRUE",
                                    " True ")} == {"true"}
    assert {label_text(v) for v in (False, "False", "false")} == {"false"}


@pytest.mark.slow
@pytest.mark.parametrize("kind, written", [("numbers", "2.0"), ("booleans", "True")])
def test_a_csv_of_whole_number_labels_with_gaps_is_scored_against_their_classes(
        kind: str, written: str, tmp_path: Path) -> None:
    """A model trained on JSON numbers (or booleans); the same documents as a CSV that
    pandas wrote from a column with missing labels (so "2.0", or "True"): no label is
    unknown, accuracy holds."""
    def label(text: str) -> Any:
        return LABELS.index(text) if kind == "numbers" else text in LABELS[:2]

    docs = [d | {"label": label(d["label"])} for d in make_docs(1500, seed=31)]
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(d) + "\n" for d in docs[:1200]))
    registry = str(tmp_path / "registry")
    assert run_cli("train", "--docs", str(train), "--name", kind,
                   "--registry", registry).rc == 0
    day = pd.DataFrame(docs[1200:])
    if kind == "booleans":  # pandas keeps them booleans beside the gaps
        day["label"] = day["label"].astype(object)
    day.loc[::10, "label"] = None  # a gap: pandas writes the column's numbers as 2.0
    (tmp_path / "in" / "dt=2026-03-01").mkdir(parents=True)
    day.to_csv(tmp_path / "in" / "dt=2026-03-01" / "part-0.csv", index=False)
    assert written in (tmp_path / "in" / "dt=2026-03-01" / "part-0.csv").read_text()
    db = tmp_path / "s.db"
    result = run_cli("score", "--date", "2026-03-01", "--input-root", str(tmp_path / "in"),
                     "--registry", registry, "--db", f"sqlite:///{db}", "--output-dir",
                     str(tmp_path / "out"), model=kind)
    assert result.rc == 0, result.err
    figures = dict(sqlite_rows(db, "SELECT metric, value FROM monitoring WHERE slice = '' "
                                   "AND metric IN ('unknown_label_share', 'accuracy')"))
    assert figures["unknown_label_share"] == 0.0 and figures["accuracy"] > 0.7, figures
    [(labelled,)] = sqlite_rows(db, "SELECT n FROM monitoring WHERE metric = 'accuracy' "
                                    "AND slice = ''")
    assert labelled == 270


def test_a_model_whose_classes_would_read_alike_keeps_reading_them_as_trained() -> None:
    """Classes "True" and "true" (a model trained when they were two labels) would be one
    text now: its labels are read as they were when it was trained, every class itself,
    so its labelled batches still score; a model without such classes reads the new way."""
    from tracking.profile import label_reader
    from transforms.infer import _true_labels
    from transforms.records import DOC_ID, LABEL

    old = ["True", "false", "true", "billing "]
    read = label_reader(old)
    assert [read(c) for c in old] == old
    frame = pd.DataFrame({LABEL: [True, "True", "billing ", "billing", None],
                          DOC_ID: list("abcde")})
    assert _true_labels(frame, np.array(old, dtype=object), 1.0).tolist() == [2, 0, 3, -2, -1]
    new = label_reader(["true", "false"])
    assert new("True") == "true" and new(" false ") == "false"
