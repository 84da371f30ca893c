"""Fencing: a run frozen past its lease (a paused VM, a stopped process group) while
another run takes its tranche over writes nothing after the takeover, ends ``abandoned``
with ``lease lost`` and exit 5, and never changes the other run's rows or status."""

from __future__ import annotations

import fcntl
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from landing.samples import make_docs, write_tranche
from store import run_records
from store.database import connect, database_identity
from store.limits import state_path
from tests.pipelines.helpers import run_cli

DAY = "2026-04-02"
REPO = Path(__file__).resolve().parents[2]
N_DOCS = 3000
LEASE = 8


def _landing(tmp: Path) -> Path:
    root = tmp / "landing"
    docs = list(make_docs(N_DOCS, seed=31, prefix="f", max_chars=200))
    for i in range(3):
        write_tranche(str(root), DAY, docs[i * 1000:(i + 1) * 1000], "jsonl", name=f"p{i}")
    return root


def _query(url: str) -> Callable[[str], list[tuple[Any, ...]]]:
    def run(sql: str) -> list[tuple[Any, ...]]:
        db = connect(url)
        try:
            return db.execute(sql)
        finally:
            db.close()
    return run


def _wait(until: Callable[[], bool], proc: subprocess.Popen[str] | None, what: str,
          timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the first run ended before {what}: {proc.communicate()}")
        try:
            if until():
                return
        except Exception:  # noqa: BLE001 - tables not created yet
            pass
        time.sleep(0.1)
    pytest.fail(f"timed out waiting until {what}")


def _inside_a_write(url: str) -> bool:
    """Whether another process holds a write open on the database: on SQLite the
    machine's writer lock (taken before each write transaction) or SQLite's own write
    lock; on PostgreSQL another client's backend running a statement or inside a
    transaction (autovacuum's workers are not writes of a run)."""
    if url.startswith("sqlite:///"):
        with open(state_path(database_identity(url), "writer.lock"), "a+") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(fh, fcntl.LOCK_UN)
        conn = sqlite3.connect(url.removeprefix("sqlite:///"), timeout=0)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.rollback()
        except sqlite3.OperationalError:  # database is locked
            return True
        finally:
            conn.close()
        return False
    [(busy,)] = _query(url)(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND backend_type = 'client backend' AND pid <> pg_backend_pid() "
        "AND state <> 'idle'")
    return bool(busy)


def _freeze_between_writes(proc: subprocess.Popen[str], url: str) -> None:
    """Stop the run's process group at a moment it holds no write open. A writer stopped
    inside a write transaction keeps the database's write lock (SQLite's, and the
    machine's writer lock in front of it; PostgreSQL's row locks) until it goes on:
    no run can write meanwhile, fenced or not. Fencing is about a run stopped between
    its writes, so the stop is retried until it lands there."""
    for _ in range(500):
        os.killpg(proc.pid, signal.SIGSTOP)
        if not _inside_a_write(url):
            return
        os.killpg(proc.pid, signal.SIGCONT)
        time.sleep(0.01)
    pytest.fail("the first run was inside a write at every stop")


def _frozen_run_is_fenced_out(url: str, registry: str, tmp: Path) -> None:
    root = _landing(tmp)
    args = ["score", "--model", "demo", "--date", DAY, "--input-root", str(root),
            "--registry", registry, "--db", url, "--output-dir", str(tmp / "out"),
            "--sink-lease-seconds", str(LEASE)]
    q = _query(url)
    # The first run writes slowly (a rate limit) in a process group of its own.
    first = subprocess.Popen([sys.executable, "-m", "pipelines.cli", *args,
                              "--sink-max-rows-per-second", "300", "--sink-batch-rows", "50"],
                             cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, start_new_session=True)
    try:
        _wait(lambda: q("SELECT count(*) FROM predictions")[0][0] > 0, first,
              "the first run writes")
        _freeze_between_writes(first, url)
        frozen_at = q("SELECT count(*) FROM predictions")[0][0]
        assert frozen_at < N_DOCS
        _wait(lambda: q("SELECT lease_until FROM tranches")[0][0] < time.time(), None,
              "the frozen run's lease expires", timeout=3 * LEASE)
        second = run_cli(*args)
        assert second.rc == 0, second.err
    finally:
        os.killpg(first.pid, signal.SIGCONT)
    out, err = first.communicate(timeout=180)
    assert first.returncode == 5, (out, err)
    assert "lease lost" in err
    [(first_id, first_status, first_counts)] = [
        r for r in q("SELECT run_id, status, counts FROM runs") if r[0] != _latest(q)]
    assert first_status == "abandoned" and "lease lost" in str(first_counts)
    second_id = _latest(q)
    assert q(f"SELECT status FROM runs WHERE run_id = '{second_id}'") == [("succeeded",)]
    rows = q("SELECT run_id, count(*), count(DISTINCT doc_id) FROM predictions GROUP BY run_id")
    assert rows == [(second_id, N_DOCS, N_DOCS)], (rows, first_id)
    assert q("SELECT run_id, status FROM tranches") == [(second_id, "completed")]
    assert q("SELECT count(*) FROM dead_letters")[0][0] == 0
    # The thawed run wrote no prediction file either: every file, and every row in
    # them, is the second run's, each document once.
    files = [pq.read_table(f, columns=["run_id", "doc_id"]).to_pylist()
             for f in (tmp / "out").glob(f"dt={DAY}/predictions-*.parquet")]
    assert {r["run_id"] for rows in files for r in rows} == {second_id}
    assert sorted(r["doc_id"] for rows in files for r in rows) == sorted(
        d for (d,) in q("SELECT doc_id FROM predictions"))
    assert run_records  # the record module is what the rows above were written by


def _latest(q: Callable[[str], list[tuple[Any, ...]]]) -> str:
    return str(q("SELECT run_id FROM runs ORDER BY started_at DESC LIMIT 1")[0][0])


@pytest.mark.slow
def test_a_frozen_run_is_fenced_out_on_sqlite(registry_root: str, tmp_path: Path) -> None:
    _frozen_run_is_fenced_out(f"sqlite:///{tmp_path / 'f.db'}", registry_root, tmp_path)


@pytest.mark.slow
@pytest.mark.postgres
def test_a_frozen_run_is_fenced_out_on_postgresql(registry_root: str, tmp_path: Path,
                                                  pg_url: str) -> None:
    _frozen_run_is_fenced_out(pg_url, registry_root, tmp_path)


def test_a_run_that_lost_a_tranche_clears_nothing_of_the_run_that_took_it(
        db_url: str, tmp_path: Path) -> None:
    """Clearing a tranche (its earlier runs' dead letters and files) is fenced like every
    write: run A, whose lease ran out and whose tranche run B took, removes no row and
    no file when it comes to clear it (``LeaseLost``); B's own clear removes A's."""
    from pipelines.orchestration.supersede import clear_tranche
    from store.database import LeaseLost
    from store.ledger import Holder, TrancheLedger

    db = connect(db_url)
    db.init_schema()
    now = [1_000_000.0]
    for run in ("run-a", "run-b"):
        run_records.start(db, run, {}, "demo:1")
    a = TrancheLedger(db, clock=lambda: now[0])
    assert a.acquire(DAY, "demo", "1", "fp", [], "run-a", 10)[0]
    fence_a = a.fence("run-a", "demo", "1", [DAY])
    row = (DAY, "in.jsonl", 1, "read", "not JSON", "x")
    db.upsert_dead_letters([("run-a", *row)])
    now[0] += 60  # A is frozen past its lease; B takes the tranche and writes
    b = TrancheLedger(db, clock=lambda: now[0], holder=Holder("another-host", 7))
    assert b.acquire(DAY, "demo", "1", "fp", [], "run-b", 10)[0]
    fence_b = b.fence("run-b", "demo", "1", [DAY])
    db.upsert_dead_letters([("run-b", *row)], fence_b)
    folder = tmp_path / "out" / f"dt={DAY}"
    folder.mkdir(parents=True)
    mine = [folder / "dead_letters-run-b-0a1b.jsonl",
            folder / "predictions-demo-v1-0a-00000.parquet"]
    for path in mine:
        path.write_text("B's\n")
    with pytest.raises(LeaseLost, match=f"tranche {DAY} was taken over"):
        clear_tranche(db, str(tmp_path / "out"), DAY, "demo:1", fence_a, 10)
    runs = "SELECT run_id FROM dead_letters ORDER BY run_id"
    assert db.execute(runs) == [("run-a",), ("run-b",)] and all(p.exists() for p in mine)
    assert b.get(DAY, "demo", "1").run_id == "run-b"  # A's confirm changed nothing either
    clear_tranche(db, str(tmp_path / "out"), DAY, "demo:1", fence_b, 10)
    assert db.execute(runs) == [("run-b",)]  # A's superseded, B's own kept
    db.close()
