"""The pipeline vocabulary: DocBatch, its coder, lineage columns, dead letters."""

from __future__ import annotations

import logging
import pickle
from collections import Counter
from pathlib import Path
from typing import Any

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.util import assert_that, equal_to

from landing.samples import make_docs
from models.preprocess import PreprocessConfig
from tracking.profile import BatchStats
from transforms.infer import TRACK, DocBatchModelHandler, ScoreBatches
from transforms.read import ReadTranches
from transforms.records import (
    BatchStatsCoder,
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
        registry_root: str, model_ref: Any, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """Every DocBatch PCollection of the scoring graph gets DocBatchCoder, whose cheap
    size estimate replaces pickling a whole frame when Beam samples element sizes; the
    type hints leave Beam nothing to warn about."""
    caplog.set_level(logging.WARNING)
    handler = DocBatchModelHandler(registry_root, model_ref, top_k=3)
    p = beam.Pipeline()  # built, never run
    read = p | ReadTranches([], FieldNames(), batch_size=10, payload_limit=100)
    valid = read.batches | ValidateAndPreprocess(PreprocessConfig(), 100, 100)
    scored = valid.valid | ScoreBatches(handler, 100)
    for pcoll in (read.batches, valid.valid, scored["scored"]):
        assert pcoll.element_type is DocBatch, pcoll
        assert isinstance(beam.coders.registry.get_coder(pcoll.element_type), DocBatchCoder)
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_docbatch_coder_round_trips_and_estimates_the_size(make_batch: Any) -> None:
    rows = [{"id": f"d{i}", "text": "word " * (20 + i % 50), "label": "billing",
             "channel": "email"} for i in range(500)]
    files = [f"/in/dt=2026-01-01/part-{j:05d}.jsonl" for j in range(50)]
    batch = make_batch(rows, sources=[(files[i // 10], 1 + i % 10) for i in range(500)])
    impl = DocBatchCoder().get_impl()
    decoded = impl.decode(impl.encode(batch))
    assert (decoded.tranche, decoded.batch_key) == (batch.tranche, batch.batch_key)
    assert decoded.frame.equals(batch.frame)
    actual = len(impl.encode(batch))
    assert actual / 2 <= impl.estimate_size(batch) <= actual * 3
    # a file's name is pickled once, however many rows name it
    one_file = make_batch(rows)
    assert actual - len(impl.encode(one_file)) < sum(map(len, files)) + 8 * len(rows)
    empty = make_batch([])
    assert 0 < impl.estimate_size(empty) <= len(impl.encode(empty)) * 3



@pytest.mark.parametrize("n, oov_per_record", [(0, 0), (50, 3), (4096, 12)])
def test_batch_stats_coder_round_trips_and_estimates_the_size(n: int, oov_per_record: int
                                                              ) -> None:
    rng = np.random.default_rng(n)
    stats = BatchStats(predicted=rng.integers(0, 5, n), scores=rng.random(n),
                       lengths=rng.integers(100, 600, n), tokens=rng.integers(10, 90, n),
                       oov=rng.integers(0, 9, n), true=rng.integers(-1, 5, n),
                       oov_words=[f"w{i % 997}x{i}" for i in range(n * oov_per_record)],
                       oov_rows=np.repeat(np.arange(n), oov_per_record),
                       doc_ids=np.asarray([f"doc-{i:08d}" for i in range(n)], dtype=object))
    impl = BatchStatsCoder().get_impl()
    decoded = impl.decode(impl.encode(stats))
    assert decoded.oov_words == stats.oov_words
    assert np.array_equal(decoded.scores, stats.scores)
    assert np.array_equal(decoded.doc_ids, stats.doc_ids)
    actual = len(impl.encode(stats))
    assert actual / 3 <= impl.estimate_size(stats) <= actual * 3


def test_a_scoring_stage_pickles_no_batch_and_no_batch_statistics(
        pipeline: Any, make_batch: Any, registry_root: str, model_ref: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches and their statistics stay in memory through the fused scoring stage, to
    a lifted combine of the statistics: Beam neither hands them on by pickle nor pickles
    them to sample their sizes (their coders estimate)."""
    pickled: Counter[str] = Counter()

    def counting(self: Any) -> dict[str, Any]:
        pickled[type(self).__name__] += 1
        return dict(self.__dict__)

    for cls in (DocBatch, BatchStats):
        monkeypatch.setattr(cls, "__getstate__", counting, raising=False)
    assert pickle.loads(pickle.dumps(make_batch([]))).batch_key and pickled["DocBatch"] == 1
    pickled.clear()
    docs = list(make_docs(240, seed=3))
    handler = DocBatchModelHandler(registry_root, model_ref, top_k=3, tracking=True)
    with pipeline as p:
        batches = (p | beam.Create(range(12))
                   | "Make batches" >> beam.Map(lambda i: make_batch(
                       docs[20 * i:20 * (i + 1)], batch_key=f"k-{i}")).with_output_types(DocBatch))
        valid = batches | ValidateAndPreprocess(PreprocessConfig(), 1000, 1000)
        scored = valid.valid | ScoreBatches(handler, 1000)
        assert_that(scored["scored"] | beam.Map(len) | beam.CombineGlobally(sum),
                    equal_to([240]), label="scored")
        assert_that(scored[TRACK] | beam.Map(lambda kv: (kv[0], len(kv[1].predicted)))
                    | beam.CombinePerKey(sum), equal_to([("2026-01-01", 240)]), label="stats")
    assert not pickled, pickled


def test_prediction_columns_carry_lineage_and_true_labels(make_batch: Any) -> None:
    batch = make_batch([{"id": "a", "text": "t", "label": "billing"}, {"id": "b", "text": "u"}],
                       sources=[("/in/a.jsonl", 7), ("/in/b.csv", 1)])
    batch = batch.with_frame(batch.frame.assign(pred_label=["x", "y"], pred_score=[0.5, 0.25],
                                                pred_top_k=["[]", "[]"]))
    ctx = RunContext("run-1", "demo", "3", "ab" * 32, "2026-01-02T00:00:00+00:00")
    cols = prediction_columns(batch, ctx)
    assert cols["doc_id"] == ["a", "b"] and cols["label"] == ["x", "y"]
    assert cols["score"] == [0.5, 0.25]
    assert true_labels(batch) == ["billing", None]
    assert set(cols["run_id"]) == {"run-1"} and set(cols["model_version"]) == {"3"}
    assert set(cols["tranche"]) == {batch.tranche}
    assert cols["source_file"] == ["/in/a.jsonl", "/in/b.csv"]
    assert cols["position"] == [7, 1]


def test_dead_letter_truncates_the_payload_and_checks_the_stage() -> None:
    dl = dead_letter(tranche="t", source_file="f", position=3, stage="read", reason="r",
                     payload=b"x" * 50, payload_limit=10)
    assert dl["payload"] == "x" * 10 + "…[truncated]"
    assert truncate_payload({"id": "é"}, 100) == '{"id": "é"}'
    assert truncate_payload(None, 10) == ""
    with pytest.raises(AssertionError):
        dead_letter(tranche="t", source_file="f", position=0, stage="nowhere", reason="r",
                    payload=None, payload_limit=10)
