"""The ledger's lock order on PostgreSQL: renewing (or failing) a run's leases never
deadlocks with a fenced write of several tranches.

A fenced write locks the ledger rows of its tranches ``FOR SHARE`` in sorted order and
keeps them until it commits. ``renew`` and ``fail_run`` change one row per statement
(each its own transaction), in the same order: while one waits for a row it holds no
other, so no cycle of waits can form. A single UPDATE of all of a run's rows would
lock them in whatever order it finds them and, holding one, wait for the next: with
the write holding that next one, a deadlock (40P01).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from store.backends.postgres import PostgresDatabase
from store.ledger import FAILED, TrancheLedger
from store.schema import PREDICTIONS

pytestmark = pytest.mark.postgres
FIRST, SECOND = "2026-01-01", "2026-01-02"


def _prediction(tranche: str) -> tuple[Any, ...]:
    return PREDICTIONS.row({
        "doc_id": f"d-{tranche}", "tranche": tranche, "label": "billing", "score": 0.9,
        "top_k": "[]", "model_name": "demo", "model_version": "1", "model_sha256": "ab" * 32,
        "run_id": "run-a", "scored_at": "2026-01-02T03:04:05+00:00",
        "source_file": "/in/part-0.jsonl", "position": 1, "metadata": None})


class _PausingAfterFirstLock(PostgresDatabase):
    """A writer that, once its fence check has locked the first tranche's ledger row,
    calls ``on_first_lock`` before it goes on."""

    on_first_lock: Callable[[], None] = staticmethod(lambda: None)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        rows = super().execute(sql, params)
        if sql == self.dialect.fence_check() and params[0] == FIRST:
            self.on_first_lock()
        return rows


def _wait_until_blocked(pid: int, seconds: float = 10.0) -> None:
    from tests.postgres import pg_admin

    deadline = time.monotonic() + seconds
    with pg_admin() as admin:
        while time.monotonic() < deadline:
            [(kind,)] = admin.execute(
                "SELECT coalesce(wait_event_type, '') FROM pg_stat_activity WHERE pid = %s",
                [pid]).fetchall()
            if kind == "Lock":
                return
            time.sleep(0.01)
    raise AssertionError(f"backend {pid} never waited for a lock")


@pytest.mark.parametrize("change", ["renew", "fail_run"])
def test_changing_a_runs_leases_during_a_fenced_write_of_two_tranches_never_deadlocks(
        change: str, pg_url: str) -> None:
    """The write holds the first tranche's row and the change waits for it (the worst
    moment); the write then locks the second row and commits, and the change goes on.
    The rows are stored second tranche first, the order a one-statement UPDATE meets
    them in, so that UPDATE would hold the second row while waiting for the first."""
    setup = PostgresDatabase(pg_url)
    setup.init_schema()
    ledger = TrancheLedger(setup, clock=lambda: 1_000_000.0)
    for tranche in (SECOND, FIRST):
        assert ledger.acquire(tranche, "demo", "1", "fp", [], "run-a", 120)[0]
    fence = ledger.fence("run-a", "demo", "1", [FIRST, SECOND])

    changer = PostgresDatabase(pg_url)
    [(pid,)] = changer.execute("SELECT pg_backend_pid()")
    errors: list[BaseException] = []

    def run_change() -> None:
        other = TrancheLedger(changer, clock=lambda: 2_000_000.0)
        try:
            other.renew("run-a", 120) if change == "renew" else other.fail_run("run-a")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    thread = threading.Thread(target=run_change)

    def start_the_change_and_let_it_wait() -> None:
        thread.start()
        _wait_until_blocked(pid)

    writer = _PausingAfterFirstLock(pg_url)
    writer.on_first_lock = start_the_change_and_let_it_wait  # type: ignore[method-assign]
    try:
        assert writer.upsert_predictions([_prediction(FIRST), _prediction(SECOND)], fence) == 2
    finally:
        thread.join(timeout=30)
    assert not thread.is_alive() and errors == []

    rows = setup.execute("SELECT tranche, status, lease_until FROM tranches ORDER BY tranche")
    if change == "renew":
        assert rows == [(FIRST, "running", 2_000_120.0), (SECOND, "running", 2_000_120.0)]
    else:
        assert [(t, s) for t, s, _ in rows] == [(FIRST, FAILED), (SECOND, FAILED)]
    for db in (setup, changer, writer):
        db.close()
