"""Prediction files: one Parquet file per batch, written by the database sink once the
batch's rows are committed (a run fenced out writes none), the table's columns plus
position and the true label, deterministic names; a name read back gives its model and version, and
a model version's files are found without another's (a name that prefixes another)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import apache_beam as beam
import pyarrow.parquet as pq
import pytest
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from landing.reading import Chunk
from store.database import connect
from store.ledger import TrancheLedger
from store.schema import PREDICTIONS
from store.session import DatabaseSettings
from transforms.files import (
    PARQUET_SCHEMA,
    prediction_file,
    prediction_files,
    prediction_model,
)
from transforms.records import RunContext
from transforms.write import SinkSettings, WriteToDatabase

CTX = RunContext("run-1", "demo", "2", "ab" * 32, "2026-01-02T00:00:00+00:00")


def _scored(make_batch: Any, key: str, n: int) -> Any:
    batch = make_batch([{"id": f"{key}-{i}", "text": "t", "label": "billing" if i else None}
                        for i in range(n)], batch_key=key, start=5)
    return batch.with_frame(batch.frame.assign(pred_label=["x"] * n, pred_score=[0.5] * n,
                                               pred_top_k=['[["x", 0.5]]'] * n))


def test_one_file_per_batch_with_the_table_columns_position_and_label(
        make_batch: Any, tmp_path: Path) -> None:
    """The database sink writes each batch's file once its rows are committed."""
    batches = [_scored(make_batch, "k1", 3), _scored(make_batch, "k2", 2)]
    sink = SinkSettings(DatabaseSettings(f"sqlite:///{tmp_path / 'p.db'}", batch_rows=2))
    with test_pipeline.TestPipeline(runner="FnApiRunner") as p:
        written = p | beam.Create(batches) | WriteToDatabase(sink, CTX, str(tmp_path))
        assert_that(written.stats | beam.Map(lambda kv: kv[1]["written"])
                    | beam.CombineGlobally(sum), equal_to([5]))
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


def test_a_run_that_lost_its_tranche_writes_no_prediction_file(
        make_batch: Any, tmp_path: Path) -> None:
    """Fenced with a token another run has since replaced (it took the tranche over):
    the first write fails with ``LeaseLost`` and no file is written, neither the
    batch's nor a later one's."""
    url = f"sqlite:///{tmp_path / 'p.db'}"
    db = connect(url)
    db.init_schema()
    TrancheLedger(db).acquire("2026-01-01", "demo", "2", "fp", [], "run-2", 3600)
    db.close()
    fenced = dataclasses.replace(CTX, fences=(("2026-01-01", 1),))  # run-1's old token
    batches = [_scored(make_batch, "k1", 3), _scored(make_batch, "k2", 2)]
    sink = SinkSettings(DatabaseSettings(url, batch_rows=2))
    with pytest.raises(Exception, match="no longer holds the lease"):
        with test_pipeline.TestPipeline(runner="FnApiRunner") as p:
            _ = p | beam.Create(batches) | WriteToDatabase(sink, fenced, str(tmp_path))
    assert not list(tmp_path.rglob("*.parquet"))


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
