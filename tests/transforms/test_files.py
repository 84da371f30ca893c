"""WritePredictionFiles: one Parquet file per batch, the table's columns plus position and
the true label, deterministic names; a name read back gives its model and version, and
a model version's files are found without another's (a name that prefixes another)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import apache_beam as beam
import pyarrow.parquet as pq
import pytest
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from landing.reading import Chunk
from store.schema import PREDICTIONS
from transforms.files import (
    PARQUET_SCHEMA,
    WritePredictionFiles,
    prediction_file,
    prediction_files,
    prediction_model,
)
from transforms.records import RunContext

CTX = RunContext("run-1", "demo", "2", "ab" * 32, "2026-01-02T00:00:00+00:00")


def _scored(make_batch: Any, key: str, n: int) -> Any:
    batch = make_batch([{"id": f"{key}-{i}", "text": "t", "label": "billing" if i else None}
                        for i in range(n)], batch_key=key, start=5)
    return batch.with_frame(batch.frame.assign(pred_label=["x"] * n, pred_score=[0.5] * n,
                                               pred_top_k=['[["x", 0.5]]'] * n))


def test_one_file_per_batch_with_the_table_columns_position_and_label(
        make_batch: Any, tmp_path: Path) -> None:
    batches = [_scored(make_batch, "k1", 3), _scored(make_batch, "k2", 2)]
    with test_pipeline.TestPipeline(runner="FnApiRunner") as p:
        passed = p | beam.Create(batches) | WritePredictionFiles(str(tmp_path), CTX)
        assert_that(passed | beam.Map(lambda b: b.batch_key), equal_to(["k1", "k2"]))
    files = sorted(tmp_path.glob("dt=2026-01-01/*.parquet"))
    assert [f.name for f in files] == ["predictions-demo-v2-k1.parquet",
                                       "predictions-demo-v2-k2.parquet"]
    table = pq.read_table(files[0])
    assert table.schema.equals(PARQUET_SCHEMA)
    assert list(table.schema.names) == [*PREDICTIONS.names, "true_label"]
    rows = table.to_pylist()
    assert [(r["doc_id"], r["position"], r["true_label"]) for r in rows] == [
        ("k1-0", 5, None), ("k1-1", 6, "billing"), ("k1-2", 7, "billing")]
    assert {(r["run_id"], r["model_version"], r["score"]) for r in rows} == {("run-1", "2", 0.5)}
    assert not list(tmp_path.rglob("*.tmp-*")), "temporary files are renamed"


@pytest.mark.filterwarnings("ignore:Possible nested set:FutureWarning")  # "out[[]1]": literal
def test_a_model_versions_prediction_files_are_found_without_anothers(
        tmp_path: Path) -> None:
    out, key = str(tmp_path / "out[1]"), Chunk("2026-01-01", "in/a.jsonl", "jsonl").key + "-00012"
    paths = {}
    for name in ("demo", "demo-2", "demo-v1", "demo-v1-0123", "a.b_c-1"):
        for version in ("1", "10"):
            ctx = RunContext("run-1", name, version, "ab" * 32, "2026-01-02T00:00:00+00:00")
            path = paths[name, version] = prediction_file(out, ctx, "2026-01-01", key)
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_bytes(b"x")
    for model, path in paths.items():
        assert prediction_model(Path(path).name) == model
        assert prediction_files(out, "2026-01-01", *model) == [path]
    assert prediction_model("dead_letters-run-1-ab.jsonl") is None
