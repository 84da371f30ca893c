"""Validation rules and ValidateAndPreprocess in a pipeline."""

from __future__ import annotations

from typing import Any

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.util import assert_that, equal_to

from models.preprocess import PreprocessConfig
from transforms.records import DEAD_LETTERS, DOC_ID, POSITION, TEXT
from transforms.validate import ValidateAndPreprocess, validation_reasons

MAX = 50



def _reasons(make_batch: Any, rows: list[dict[str, Any]]) -> list[str]:
    return list(validation_reasons(make_batch(rows).frame, MAX))


@pytest.mark.parametrize("row, reason", [
    ({"text": "fine text"}, "missing id"),
    ({"id": None, "text": "fine text"}, "missing id"),
    ({"id": float("nan"), "text": "fine text"}, "id is not a string"),
    ({"id": 12345, "text": "fine text"}, "id is not a string"),
    ({"id": ["a"], "text": "fine text"}, "id is not a string"),
    ({"id": "", "text": "fine text"}, "empty id"),
    ({"id": "   ", "text": "fine text"}, "empty id"),
    ({"id": "x"}, "missing text"),
    ({"id": "x", "text": None}, "missing text"),
    ({"id": "x", "text": float("nan")}, "text is not a string"),
    ({"id": "x", "text": 42}, "text is not a string"),
    ({"id": "x", "text": {"nested": "obj"}}, "text is not a string"),
    ({"id": "x", "text": ""}, "empty text"),
    ({"id": "x", "text": " \t\n "}, "empty text"),
    ({"id": "x", "text": "y" * (MAX + 1)}, f"text longer than max_text_chars={MAX}"),
])
def test_each_rule_gives_its_reason(make_batch: Any, row: dict[str, Any], reason: str) -> None:
    ok = {"id": "ok", "text": "a valid text"}
    assert _reasons(make_batch, [ok, row, ok]) == ["", reason, ""]


def test_boundary_length_and_rule_order(make_batch: Any) -> None:
    rows = [
        {"id": "x", "text": "y" * MAX},         # exactly the limit: valid
        {"text": None},                          # both missing: the id rule comes first
        {"id": 7, "text": ""},                   # non-string id beats empty text
    ]
    assert _reasons(make_batch, rows) == ["", "missing id", "id is not a string"]


def test_validate_and_preprocess_splits_valid_and_dead_letters(pipeline: Any,
                                                               make_batch: Any) -> None:
    rows = [
        {"id": "a", "text": "  Hello <b>World</b>  "},
        {"text": "no id"},
        {"id": 5, "text": "numeric id"},
        {"id": " ", "text": "blank id"},
        {"id": "b"},
        {"id": "c", "text": 3.5},
        {"id": "d", "text": "   "},
        {"id": "e", "text": "z" * (MAX + 1)},
        {"id": "f", "text": "<p><br/></p>"},     # only HTML: emptied by preprocessing
        {"id": "g", "text": "z" * MAX},
    ]
    batch = make_batch(rows, source_file="/in/dt=2026-01-01/x.jsonl", start=11)
    expected_dead = [
        (12, "validate", "missing id"), (13, "validate", "id is not a string"),
        (14, "validate", "empty id"), (15, "validate", "missing text"),
        (16, "validate", "text is not a string"), (17, "validate", "empty text"),
        (18, "validate", f"text longer than max_text_chars={MAX}"),
        (19, "preprocess", "text is empty after preprocessing"),
    ]

    def check_dead(dead: list[dict[str, Any]]) -> None:
        for d in dead:
            assert d["source_file"] == "/in/dt=2026-01-01/x.jsonl"
            assert d["tranche"] == "2026-01-01"
            assert d["payload"], "the raw record is kept for the operator"

    with pipeline as p:
        out = p | beam.Create([batch]) | ValidateAndPreprocess(PreprocessConfig(), MAX, 500)
        valid = out.valid | beam.FlatMap(lambda b: zip(
            b.frame[POSITION].tolist(), b.frame[DOC_ID].tolist(), b.frame[TEXT].tolist()))
        assert_that(valid, equal_to([(11, "a", "Hello World"), (20, "g", "z" * MAX)]),
                    label="valid")
        dead = out[DEAD_LETTERS] | beam.Map(lambda d: (d["position"], d["stage"], d["reason"]))
        assert_that(dead, equal_to(expected_dead), label="dead")
        assert_that(out[DEAD_LETTERS], check_dead, label="dead fields")


def test_batch_with_no_valid_rows_emits_no_batch(pipeline: Any, make_batch: Any) -> None:
    batch = make_batch([{"id": "a", "text": ""}, {"id": "b", "text": "<i></i>"}])
    with pipeline as p:
        out = p | beam.Create([batch]) | ValidateAndPreprocess(PreprocessConfig(), MAX, 500)
        assert_that(out.valid, equal_to([]), label="no batch")
        assert_that(out[DEAD_LETTERS] | beam.Map(lambda d: d["stage"]),
                    equal_to(["validate", "preprocess"]), label="dead")


def test_validation_reasons_returns_one_entry_per_row(make_batch: Any) -> None:
    reasons = validation_reasons(make_batch([{"id": "a", "text": "t"}] * 4).frame, MAX)
    assert isinstance(reasons, np.ndarray) and list(reasons) == [""] * 4

