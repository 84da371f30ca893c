"""The tranche ledger: decisions, exclusive leases that expire, outcomes (patched clock)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from store.database import Database, connect
from store.ledger import BUSY, COMPLETED, FAILED, RUN, SKIP, TrancheLedger


class Clock:
    def __init__(self, now: float = 1_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = connect(f"sqlite:///{tmp_path / 'l.db'}")
    database.init_schema()
    yield database
    database.close()


def _take(ledger: TrancheLedger, run_id: str, fingerprint: str = "fp1",
          lease: int = 60) -> bool:
    return ledger.acquire("2026-01-01", "demo", "1", fingerprint, [{"path": "a"}], run_id, lease)


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
