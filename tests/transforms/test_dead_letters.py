"""WriteDeadLetters: rows and JSONL files per tranche, bounded buffers, idempotent files."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import apache_beam as beam
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from store.session import DatabaseSettings
from transforms.dead_letters import WriteDeadLetters
from transforms.records import dead_letter
from transforms.write import SinkSettings


def _dead(tranche: str, position: int, stage: str = "read") -> dict[str, Any]:
    return dead_letter(tranche=tranche, source_file=f"/in/dt={tranche}/a.jsonl",
                       position=position, stage=stage, reason="malformed JSON",
                       payload='{"id": ', payload_limit=100)


def _run(db: Path, out: Path, dead: list[dict[str, Any]], flush_at: int) -> None:
    with test_pipeline.TestPipeline(runner="FnApiRunner") as p:
        stats = (p | beam.Create(dead, reshuffle=False)
                 | WriteDeadLetters(SinkSettings(DatabaseSettings(f"sqlite:///{db}")), "run-1",
                                    str(out), flush_at=flush_at))
        totals = (stats | beam.MapTuple(lambda t, c: (t, (c["dead_lettered"], c.get("dead_read", 0),
                                                          c.get("dead_validate", 0))))
                  | beam.CombinePerKey(lambda vs: tuple(map(sum, zip(*vs)))))
        assert_that(totals, equal_to([("2026-01-01", (10, 7, 3)), ("2026-01-02", (5, 5, 0))]))


def test_dead_letters_flushed_in_small_groups_lose_nothing(tmp_path: Path) -> None:
    dead = ([_dead("2026-01-01", i) for i in range(1, 8)]
            + [_dead("2026-01-01", i, "validate") for i in range(1, 4)]
            + [_dead("2026-01-02", i) for i in range(1, 6)])
    db, out = tmp_path / "s.db", tmp_path / "out"
    _run(db, out, dead, flush_at=3)  # the memory bound, forced to bite
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM dead_letters").fetchone() == (15,)
        assert conn.execute("SELECT DISTINCT run_id FROM dead_letters").fetchall() == [
            ("run-1",)]
    files = list((out / "dt=2026-01-01").glob("dead_letters-run-1-*.jsonl"))
    assert len(files) > 1
    lines = [json.loads(line) for f in files for line in f.read_text().splitlines()]
    assert len(lines) == 10
    assert {(d["position"], d["stage"]) for d in lines} == \
        {(i, "read") for i in range(1, 8)} | {(i, "validate") for i in range(1, 4)}


def test_a_rerun_of_the_same_dead_letters_rewrites_the_same_files(tmp_path: Path) -> None:
    dead = ([_dead("2026-01-01", i) for i in range(1, 8)]
            + [_dead("2026-01-01", i, "validate") for i in range(1, 4)]
            + [_dead("2026-01-02", i) for i in range(1, 6)])
    db, out = tmp_path / "s.db", tmp_path / "out"
    _run(db, out, dead, flush_at=100)
    first = sorted(p.name for p in out.rglob("*.jsonl"))
    _run(db, out, dead, flush_at=100)
    assert sorted(p.name for p in out.rglob("*.jsonl")) == first
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM dead_letters").fetchone() == (15,)
