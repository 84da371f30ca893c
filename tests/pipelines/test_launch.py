"""Launch-time work: the lease heartbeat while the launcher waits for its pipeline."""

from __future__ import annotations

import time
from pathlib import Path

from pipelines.configuration.config import load_config
from pipelines.orchestration.launch import LeaseKeeper
from store import run_records
from store.database import connect
from store.ledger import TrancheLedger


def _lease_until(url: str) -> float:
    db = connect(url)
    try:
        [(until,)] = db.execute("SELECT lease_until FROM tranches")
        return float(until)
    finally:
        db.close()


def test_the_heartbeat_renews_the_leases_every_quarter_lease_until_stopped(
        tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'k.db'}"
    cfg = load_config(None, {"db": url, "sink.lease_seconds": 2})
    db = connect(url)
    db.init_schema()
    run_records.start(db, "run-k", {}, "demo:1")
    TrancheLedger(db).acquire("2026-01-01", "demo", "1", "fp", [], "run-k", 2)
    db.close()
    first = _lease_until(url)
    keeper = LeaseKeeper(cfg.database, "run-k")
    keeper.start()
    try:
        deadline = time.monotonic() + 5
        while _lease_until(url) <= first and time.monotonic() < deadline:
            time.sleep(0.05)
        renewed = _lease_until(url)
    finally:
        keeper.stop()
        keeper.join(5)
    assert renewed > first  # renewed within a quarter lease (0.5 s), long before expiry
    assert not keeper.is_alive()
