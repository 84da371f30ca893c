"""WriteDeadLetters: rows and JSONL files per tranche, bounded buffers, idempotent files."""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import uuid
from pathlib import Path
from typing import Any

import apache_beam as beam
import pytest
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from store.backends.base import Fence
from store.backends.sqlite import SQLiteDialect
from store.database import LeaseLost, connect
from store.ledger import TrancheLedger
from store.schema import DEAD_LETTERS
from store.session import DatabaseSettings
from tests.data import fail_first_writes
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


def test_rows_the_database_rejects_are_stored_as_stand_ins_and_kept_in_the_files(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A stricter table than beamscore's own (payloads of at most 10 characters, no
    position 13): rejected rows are isolated, stored again without their payload and
    the database's message as reason; a row rejected again is logged, and every dead
    letter is still in the JSONL files and counted."""
    db = tmp_path / "strict.db"
    conn = sqlite3.connect(db)
    conn.execute(SQLiteDialect().ddl(DEAD_LETTERS)[0].replace(
        "payload TEXT NOT NULL",
        "payload TEXT NOT NULL CHECK (length(payload) <= 10) CHECK (position <> 13)"))
    conn.close()
    dead = [dict(_dead("2026-01-01", i), payload="x" * (30 if i % 4 == 1 else 5))
            for i in range(1, 17)]
    out = tmp_path / "out"
    caplog.set_level("ERROR")
    with test_pipeline.TestPipeline(runner="FnApiRunner") as p:
        stats = (p | beam.Create(dead, reshuffle=False)
                 | WriteDeadLetters(SinkSettings(DatabaseSettings(f"sqlite:///{db}",
                                                                  batch_rows=4)),
                                  "run-1", str(out)))
        assert_that(stats | beam.Map(lambda kv: kv[1]["dead_lettered"])
                    | beam.CombineGlobally(sum), equal_to([16]))
    with sqlite3.connect(db) as conn:
        rows = dict(((pos, (payload, reason)) for pos, payload, reason in conn.execute(
            "SELECT position, payload, reason FROM dead_letters")))
    assert sorted(rows) == [i for i in range(1, 17) if i != 13]
    for i in (1, 5, 9):
        assert rows[i][0] == "" and rows[i][1].startswith("database rejected the row: ")
        assert "CHECK constraint" in rows[i][1]
    assert all(rows[i] == ("x" * 5, "malformed JSON") for i in rows if i % 4 != 1)
    lines = [json.loads(line) for f in out.rglob("*.jsonl") for line in f.read_text().splitlines()]
    assert sorted(d["position"] for d in lines) == list(range(1, 17))
    assert any(":13 " in r.getMessage() and "CHECK constraint" in r.getMessage()
               for r in caplog.records)


def test_the_waits_of_dead_letter_writes_reach_the_run_summary(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Dead letters go through the one sink's rate limit and retries; the time they
    wait is in their stats, so the summary's total (what "rate-limited Xs" and "waited
    for database Ys" print) counts it. The rate limit of 40 rows/s cuts 30 dead letters
    into three paced writes of 10 (0.25 s apart); the first write meets a transient
    error whose backoff (not slept here) is waited for the database."""
    from transforms.outcome import merge_counts, summarise

    lost = fail_first_writes(monkeypatch, "upsert_dead_letters", 1)
    settings = SinkSettings(DatabaseSettings(f"sqlite:///{tmp_path / 'w.db'}",
                                             max_rows_per_second=40,
                                             state_dir=str(tmp_path)))
    dead = [_dead("2026-01-01", i) for i in range(30)]

    def summary_total(stats: list[tuple[str, dict[str, int]]]) -> dict[str, int]:
        per_tranche = {t: merge_counts(c for u, c in stats if u == t) for t, _ in stats}
        per_tranche = {t: {"read": c["dead_lettered"], **c} for t, c in per_tranche.items()}
        return summarise("run-1", per_tranche, 1.0)["total"]

    with test_pipeline.TestPipeline(runner="FnApiRunner") as p:
        stats = (p | beam.Create(dead, reshuffle=False)
                 | WriteDeadLetters(settings, "run-1", str(tmp_path / "out"), flush_at=100))
        total = stats | beam.combiners.ToList() | beam.Map(summary_total)
        assert_that(total | beam.Map(lambda t: (
            t["dead_lettered"], t["rate_limited_ms"] >= 400, t["db_wait_ms"] >= 200,
            t["throttled_ms"] == t["rate_limited_ms"] + t["db_wait_ms"])),
            equal_to([(30, True, True, True)]))
    assert lost == [0]


def _one_bundle(url: str, out: Path, dead: list[dict[str, Any]], flush_at: int,
                fence: Fence | None = None) -> dict[str, bytes]:
    """``dead`` through one bundle of the sink's DoFn, in that order; the files written."""
    fn = WriteDeadLetters(SinkSettings(DatabaseSettings(url)), "run-1", str(out),
                          flush_at=flush_at, fence=fence)._fn
    fn.setup()
    try:
        fn.start_bundle()
        for d in dead:
            list(fn.process(d))
        list(fn.finish_bundle())
    finally:
        fn.teardown()
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*.jsonl"))}


_DEAD = st.builds(
    lambda tranche, source, position, stage: dead_letter(
        tranche=tranche, source_file=f"/in/dt={tranche}/{source}.jsonl", position=position,
        stage=stage, reason="bad", payload=f"record {source}:{position}", payload_limit=100),
    st.sampled_from(["2026-01-01", "2026-01-02"]),
    st.sampled_from(["a", "b", "a b", "ab", "é", "tab\there", 'quote"d', "new\nline",
                     "a\nb", "caf\udce9"]),
    st.integers(0, 40), st.sampled_from(["read", "validate", "sink"]))


@given(dead=st.lists(_DEAD, min_size=1, max_size=30,
                     unique_by=lambda d: (d["source_file"], d["position"], d["stage"])),
       flush_at=st.integers(1, 8), order=st.randoms(use_true_random=False))
@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_a_bundles_files_depend_on_its_dead_letters_not_on_their_order(
        tmp_path: Path, dead: list[dict[str, Any]], flush_at: int, order: Any) -> None:
    """The same dead letters in another order (so the flushes hold other groups, as
    when the rows a database rejects come in at other moments of a retried bundle) give
    the same files, byte for byte: against a reference (each tranche's lines sorted by
    source file, position and stage, cut every ``flush_at``), every dead letter is one
    line of one file."""
    shuffled = list(dead)
    order.shuffle(shuffled)
    case = tmp_path / uuid.uuid4().hex
    first = _one_bundle(f"sqlite:///{case}-1.db", case / "one", dead, flush_at)
    second = _one_bundle(f"sqlite:///{case}-2.db", case / "two", shuffled, flush_at)
    assert first == second
    expected: dict[str, list[list[str]]] = {}
    for tranche in sorted({d["tranche"] for d in dead}):
        lines = [json.dumps({"run_id": "run-1", **d}, ensure_ascii=False) + "\n"
                 for d in sorted((d for d in dead if d["tranche"] == tranche),
                                 key=lambda d: (d["source_file"], d["position"], d["stage"]))]
        expected[tranche] = [lines[i:i + flush_at] for i in range(0, len(lines), flush_at)]
    found: dict[str, list[list[str]]] = {}
    for name, content in first.items():
        found.setdefault(name.split("/")[0][3:], []).append(
            content.decode().splitlines(keepends=True))
    assert {t: sorted(parts) for t, parts in found.items()} == \
        {t: sorted(parts) for t, parts in expected.items()}


def test_a_run_that_lost_its_tranche_after_the_last_flush_writes_no_file(
        tmp_path: Path, db_url: str) -> None:
    """The rows were stored under the lease; another run took the tranche over before the
    bundle ended: its files are not written (the lease check before them fails)."""
    url = db_url
    db = connect(url)
    db.init_schema()
    now = [1_000_000.0]
    ledger = TrancheLedger(db, clock=lambda: now[0])
    assert ledger.acquire("2026-01-01", "demo", "1", "fp", [{"path": "a"}], "run-1", 10)[0]
    fence = ledger.fence("run-1", "demo", "1", ["2026-01-01"])
    fn = WriteDeadLetters(SinkSettings(DatabaseSettings(url)), "run-1", str(tmp_path / "out"),
                          flush_at=2, fence=fence)._fn
    fn.setup()
    fn.start_bundle()
    for i in range(1, 5):  # two full flushes: nothing left for the bundle's end
        list(fn.process(_dead("2026-01-01", i)))
    now[0] += 11  # run-1's lease expired: run-2 takes the tranche
    assert ledger.acquire("2026-01-01", "demo", "1", "fp", [{"path": "a"}], "run-2", 10)[0]
    with pytest.raises(LeaseLost):
        list(fn.finish_bundle())
    fn.teardown()
    assert not list((tmp_path / "out").rglob("*.jsonl"))
    assert db.execute("SELECT count(*) FROM dead_letters") == [(4,)]
    db.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/fd")
def test_a_bundle_of_many_flushes_keeps_one_spill_file_open(tmp_path: Path) -> None:
    """Every flush's lines wait for the bundle's end in one local file, whatever the
    number of flushes: the open files do not grow with the dead letters."""
    fn = WriteDeadLetters(SinkSettings(DatabaseSettings(f"sqlite:///{tmp_path / 'm.db'}")),
                          "run-1", str(tmp_path / "out"), flush_at=1)._fn
    fn.setup()
    fn.start_bundle()
    list(fn.process(_dead("2026-01-01", 1)))
    open_after_one = len(os.listdir("/proc/self/fd"))
    for i in range(2, 201):
        list(fn.process(_dead("2026-01-01", i)))
    assert len(os.listdir("/proc/self/fd")) <= open_after_one
    list(fn.finish_bundle())
    fn.teardown()
    files = list((tmp_path / "out").rglob("*.jsonl"))
    assert len(files) == 200  # flush_at lines a file
    assert sorted(json.loads(f.read_text())["position"] for f in files) == list(range(1, 201))
