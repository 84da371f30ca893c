"""The tranche ledger: decisions, exclusive leases that expire, outcomes (patched clock)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from store.database import Database, LeaseLost, connect
from store.ledger import BUSY, COMPLETED, FAILED, RUN, SKIP, Holder, TrancheLedger
from store.schema import PREDICTIONS


class Clock:
    def __init__(self, now: float = 1_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """The ledger on each backend: its conditional upsert and updates are the backend's
    SQL."""
    url = (f"sqlite:///{tmp_path / 'l.db'}" if request.param == "sqlite"
           else request.getfixturevalue("pg_url"))
    database = connect(url)
    database.init_schema()
    yield database
    database.close()


def _take(ledger: TrancheLedger, run_id: str, fingerprint: str = "fp1",
          lease: int = 60) -> bool:
    taken, _ = ledger.acquire("2026-01-01", "demo", "1", fingerprint, [{"path": "a"}], run_id,
                              lease)
    return taken


def _decide(ledger: TrancheLedger, fingerprint: str = "fp1", force: bool = False) -> str:
    return ledger.decide("2026-01-01", "demo", "1", fingerprint, force)[0]


def test_decisions_through_a_tranche_life(db: Database) -> None:
    ledger = TrancheLedger(db, clock=Clock())
    assert _decide(ledger) == RUN  # never scored
    assert _take(ledger, "run-a")
    assert _decide(ledger) == BUSY
    ledger.finish("run-a", "2026-01-01", COMPLETED, {"read": 1})
    assert _decide(ledger) == SKIP
    assert _decide(ledger, force=True) == RUN
    assert _decide(ledger, fingerprint="fp2") == RUN  # inputs changed
    assert ledger.decide("2026-01-01", "demo", "2", "fp1", False)[0] == RUN  # other version
    entry = ledger.get("2026-01-01", "demo", "1")
    assert entry is not None and entry.counts == {"read": 1} and entry.lease_until is None


def test_a_live_lease_is_exclusive_and_an_expired_one_is_taken_over(db: Database) -> None:
    clock = Clock()
    ledger = TrancheLedger(db, clock=clock)
    assert _take(ledger, "run-a", lease=60)
    assert not _take(ledger, "run-b")
    assert _take(ledger, "run-a"), "the holder may take its own lease again"
    clock.now += 59
    assert not _take(ledger, "run-b")
    ledger.renew("run-a", 60)
    clock.now += 59
    assert not _take(ledger, "run-b"), "renewed: still held"
    clock.now += 2
    assert _take(ledger, "run-b")
    entry = ledger.get("2026-01-01", "demo", "1")
    assert entry is not None and entry.run_id == "run-b"


def test_a_failed_run_frees_its_tranches_and_they_are_scored_again(db: Database) -> None:
    ledger = TrancheLedger(db, clock=Clock())
    assert _take(ledger, "run-a")
    ledger.fail_run("run-a")
    entry = ledger.get("2026-01-01", "demo", "1")
    assert entry is not None and entry.status == FAILED and entry.lease_until is None
    assert _decide(ledger) == RUN
    assert _take(ledger, "run-b")


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_a_lease_whose_process_is_gone_on_this_host_is_taken_over_at_once(
        db: Database) -> None:
    clock = Clock()
    here = Holder.this_process().host
    gone = TrancheLedger(db, clock=clock, holder=Holder(here, _dead_pid()))
    assert _take(gone, "run-a", lease=120)
    ledger = TrancheLedger(db, clock=clock)
    decision, detail = ledger.decide("2026-01-01", "demo", "1", "fp1", False)
    assert decision == RUN and "run-a abandoned it" in detail and "is gone" in detail
    assert ledger.acquire("2026-01-01", "demo", "1", "fp1", [], "run-b", 120) == (True, "run-a")


def test_a_lease_held_on_another_host_waits_for_its_expiry(db: Database) -> None:
    clock = Clock()
    other = TrancheLedger(db, clock=clock, holder=Holder("elsewhere", _dead_pid()))
    assert _take(other, "run-a", lease=120)
    ledger = TrancheLedger(db, clock=clock)
    assert _decide(ledger) == BUSY
    assert ledger.acquire("2026-01-01", "demo", "1", "fp1", [], "run-b", 120) == (False, None)
    clock.now += 121
    decision, detail = ledger.decide("2026-01-01", "demo", "1", "fp1", False)
    assert decision == RUN and "lease expired" in detail
    assert ledger.acquire("2026-01-01", "demo", "1", "fp1", [], "run-b", 120) == (True, "run-a")


def _prediction(run_id: str) -> tuple[Any, ...]:
    return PREDICTIONS.row({
        "doc_id": "d1", "tranche": "2026-01-01", "label": "billing", "score": 0.9,
        "top_k": '[["billing", 0.9]]', "model_name": "demo", "model_version": "1",
        "model_sha256": "ab" * 32, "run_id": run_id, "scored_at": "2026-01-02T03:04:05+00:00",
        "source_file": "/in/part-0.jsonl", "position": 1, "metadata": None})


def test_each_take_raises_the_token_and_a_fenced_write_needs_the_current_one(
        db: Database) -> None:
    clock = Clock()
    ledger = TrancheLedger(db, clock=clock)
    assert _take(ledger, "run-a", lease=10)
    first = ledger.fence("run-a", "demo", "1", ["2026-01-01"])
    assert db.upsert_predictions([_prediction("run-a")], first) == 1
    clock.now += 11  # run-a stopped renewing: run-b takes the tranche over
    assert _take(ledger, "run-b")
    second = ledger.fence("run-b", "demo", "1", ["2026-01-01"])
    assert second.tokens["2026-01-01"] == first.tokens["2026-01-01"] + 1
    assert ledger.lost(first) == ["2026-01-01"] and ledger.lost(second) == []
    assert ledger.fence("run-a", "demo", "1", ["2026-01-01"]).tokens == {}
    with pytest.raises(LeaseLost, match="run-a no longer holds"):
        db.upsert_predictions([_prediction("run-a")], first)
    assert db.upsert_predictions([_prediction("run-b")], second) == 1
    assert db.execute("SELECT run_id FROM predictions") == [("run-b",)]
    assert not ledger.finish("run-a", "2026-01-01", "completed", {})  # changes nothing
    assert ledger.get("2026-01-01", "demo", "1").status == "running"  # type: ignore[union-attr]


def test_a_take_after_another_run_took_the_tranche_since_it_was_read_fails(
        db: Database) -> None:
    """The token is compared and set in the same statement: a stale read cannot give two
    holders one token."""
    clock = Clock()
    ledger = TrancheLedger(db, clock=clock)
    assert _take(ledger, "run-a", lease=10)
    clock.now += 11
    stale = ledger.get("2026-01-01", "demo", "1")
    assert _take(ledger, "run-b", lease=10)
    racing = TrancheLedger(db, clock=clock)
    reads = iter([stale])  # run-c read the row before run-b took it, then re-reads it
    racing.get = lambda *a: next(reads, None) or ledger.get(*a)  # type: ignore[method-assign]
    assert not _take(racing, "run-c")
    assert ledger.get("2026-01-01", "demo", "1").run_id == "run-b"  # type: ignore[union-attr]
