"""The pipeline vocabulary: DocBatch, its coder, lineage columns, dead letters."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import apache_beam as beam
import pytest

from models.preprocess import PreprocessConfig
from transforms.files import WritePredictionFiles
from transforms.infer import DocBatchModelHandler, ScoreBatches
from transforms.read import ReadTranches
from transforms.records import (
    DocBatch,
    DocBatchCoder,
    FieldNames,
    RunContext,
    dead_letter,
    prediction_columns,
    true_labels,
    truncate_payload,
)
from transforms.validate import ValidateAndPreprocess


def test_docbatch_pcollections_are_typed_and_use_the_docbatch_coder(
        registry_root: str, model_ref: Any, tmp_path: Path) -> None:
    """Every DocBatch PCollection of the scoring graph gets DocBatchCoder, whose cheap
    size estimate replaces pickling a whole frame when Beam samples element sizes."""
    handler = DocBatchModelHandler(registry_root, model_ref, top_k=3)
    ctx = RunContext("r", model_ref.name, model_ref.version, model_ref.sha256, "t")
    p = beam.Pipeline()  # built, never run
    read = p | ReadTranches([], FieldNames(), batch_size=10, payload_limit=100)
    valid = read.batches | ValidateAndPreprocess(PreprocessConfig(), 100, 100)
    scored = valid.valid | ScoreBatches(handler, 100)
    files = scored["scored"] | WritePredictionFiles(str(tmp_path), ctx)
    for pcoll in (read.batches, valid.valid, scored["scored"], files):
        assert pcoll.element_type is DocBatch, pcoll
        assert isinstance(beam.coders.registry.get_coder(pcoll.element_type), DocBatchCoder)


def test_docbatch_coder_round_trips_and_estimates_the_size(make_batch: Any) -> None:
    rows = [{"id": f"d{i}", "text": "word " * (20 + i % 50), "label": "billing",
             "channel": "email"} for i in range(500)]
    batch = make_batch(rows)
    impl = DocBatchCoder().get_impl()
    decoded = impl.decode(impl.encode(batch))
    assert (decoded.tranche, decoded.source_file, decoded.batch_key) == \
        (batch.tranche, batch.source_file, batch.batch_key)
    assert decoded.frame.equals(batch.frame)
    actual = len(impl.encode(batch))
    assert actual / 2 <= impl.estimate_size(batch) <= actual * 3
    empty = make_batch([])
    assert 0 < impl.estimate_size(empty) <= len(impl.encode(empty)) * 3



def test_prediction_columns_carry_lineage_and_true_labels(make_batch: Any) -> None:
    batch = make_batch([{"id": "a", "text": "t", "label": "billing"}, {"id": "b", "text": "u"}],
                       start=7)
    batch = batch.with_frame(batch.frame.assign(pred_label=["x", "y"], pred_score=[0.5, 0.25],
                                                pred_top_k=["[]", "[]"]))
    ctx = RunContext("run-1", "demo", "3", "ab" * 32, "2026-01-02T00:00:00+00:00")
    cols = prediction_columns(batch, ctx)
    assert cols["doc_id"] == ["a", "b"] and cols["label"] == ["x", "y"]
    assert cols["score"] == [0.5, 0.25]
    assert true_labels(batch) == ["billing", None]
    assert set(cols["run_id"]) == {"run-1"} and set(cols["model_version"]) == {"3"}
    assert set(cols["tranche"]) == {batch.tranche}
    assert set(cols["source_file"]) == {batch.source_file}


def test_dead_letter_truncates_the_payload_and_checks_the_stage() -> None:
    dl = dead_letter(tranche="t", source_file="f", position=3, stage="read", reason="r",
                     payload=b"x" * 50, payload_limit=10)
    assert dl["payload"] == "x" * 10 + "…[truncated]"
    assert truncate_payload({"id": "é"}, 100) == '{"id": "é"}'
    assert truncate_payload(None, 10) == ""
    with pytest.raises(AssertionError):
        dead_letter(tranche="t", source_file="f", position=0, stage="nowhere", reason="r",
                    payload=None, payload_limit=10)
