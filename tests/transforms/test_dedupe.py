"""FindDuplicateIds: the first occurrence of an id in a tranche is kept, in the table and
the files; every later one is a dead letter naming the first."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow.parquet as pq
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from store.session import DatabaseSettings
from tests.data import sqlite_rows
from transforms.dedupe import FindDuplicateIds, IdIndex, id_hashes
from transforms.records import DEAD_LETTERS, DocBatch, RunContext
from transforms.write import IDS, SinkSettings, WriteToDatabase

CTX = RunContext("run-d", "demo", "1", "ab" * 32, "2026-01-02T00:00:00+00:00")


def _index(tranche: str, source: str, key: str, ids: list[str], positions: list[int]
           ) -> IdIndex:
    hi, lo = id_hashes(ids)
    return IdIndex(tranche, key, (source,), np.zeros(len(ids), np.int64), hi, lo,
                   np.asarray(positions))


def test_later_occurrences_are_found_in_file_then_position_order(tmp_path: Path) -> None:
    """Across batches and files of a tranche, every occurrence of an id after the first
    (smallest file, then position) is a duplicate; a retried write of the same rows is
    not; other tranches are separate."""
    parts = [_index("t", "b.jsonl", "kb", ["x", "y", "x"], [1, 2, 3]),
             _index("t", "a.jsonl", "ka", ["z", "x"], [4, 5]),
             _index("t", "a.jsonl", "ka", ["z", "x"], [4, 5]),  # the same write, retried
             _index("u", "c.jsonl", "kc", ["x"], [1])]
    with test_pipeline.TestPipeline(runner="FnApiRunner") as p:
        dead = p | beam.Create(parts) | FindDuplicateIds(str(tmp_path), CTX, 100)
        assert_that(dead | beam.Map(lambda d: (d["tranche"], d["source_file"], d["position"],
                                               d["reason"])),
                    equal_to([("t", "b.jsonl", 1, "duplicate id in tranche: first at "
                                                  "a.jsonl position 5"),
                              ("t", "b.jsonl", 3, "duplicate id in tranche: first at "
                                                  "a.jsonl position 5")]))
    hi, lo = id_hashes(["x", "x", "X"])
    assert hi[0] == hi[1] != hi[2] and lo[0] == lo[1] != lo[2]


def _batch(make_batch: Any, source: str, key: str, ids: list[str], start: int) -> DocBatch:
    b = make_batch([{"id": i, "text": "t"} for i in ids], source_file=source, batch_key=key,
                   start=start)
    n = len(ids)
    return b.with_frame(b.frame.assign(pred_label=[f"l{start + j}" for j in range(n)],
                                       pred_score=[0.5] * n, pred_top_k=["[]"] * n))


def test_duplicates_are_dead_lettered_and_removed_from_table_and_files(
        make_batch: Any, tmp_path: Path) -> None:
    db, out = tmp_path / "d.db", tmp_path / "out"
    a, b = "/in/dt=2026-01-01/a.jsonl", "/in/dt=2026-01-01/b.jsonl"
    batches = [_batch(make_batch, b, "kb", ["d1", "d2", "d3"], 1),         # b is later in
               _batch(make_batch, a, "ka", ["d2", "d4", "d2", "d5"], 1)]    # file order
    sink = SinkSettings(DatabaseSettings(f"sqlite:///{db}", batch_rows=2))
    expected = [(b, 2, f"first at {a} position 1", "d2"),
                (a, 3, f"first at {a} position 1", "d2")]
    with test_pipeline.TestPipeline(runner="FnApiRunner") as p:
        written = p | beam.Create(batches) | WriteToDatabase(sink, CTX, str(out))
        dead = written[IDS] | FindDuplicateIds(str(out), CTX, 100)
        assert_that(dead | beam.Map(lambda d: (d["source_file"], d["position"],
                                               d["reason"].split("tranche: ", 1)[1],
                                               d["payload"].split('"')[3])),
                    equal_to(expected), label="duplicates")
        assert_that(dead | beam.Map(lambda d: (d["stage"], d["reason"].startswith(
            "duplicate id in tranche"))), equal_to([("dedupe", True)] * 2), label="stage")
        assert_that(written[DEAD_LETTERS], equal_to([]), label="no sink rejects")
    assert sorted(sqlite_rows(db, "SELECT doc_id, source_file, position, label FROM "
                                  "predictions")) == [
        ("d1", b, 1, "l1"), ("d2", a, 1, "l1"), ("d3", b, 3, "l3"), ("d4", a, 2, "l2"),
        ("d5", a, 4, "l4")]
    files = {f.name: pq.read_table(f).to_pylist() for f in out.glob("dt=*/*.parquet")}
    assert sorted((r["doc_id"], r["position"]) for rows in files.values() for r in rows) == [
        ("d1", 1), ("d2", 1), ("d3", 3), ("d4", 2), ("d5", 4)]
