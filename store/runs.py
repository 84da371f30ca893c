"""The run record: one ``runs`` row per run, from launch to its outcome.

``start`` writes it with status ``running``, the resolved config and the model; the
pipeline's last step calls ``finish`` with the summary; a launcher that sees the run
fail calls ``fail``, which also releases the run's tranche leases.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
from typing import Any

from store.database import Database
from store.ledger import TrancheLedger

RUNNING, FAILED = "running", "failed"


def new_run_id() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ-") + secrets.token_hex(3)


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


def start(db: Database, run_id: str, config: dict[str, Any], model: str) -> None:
    db.upsert_run({
        "run_id": run_id, "started_at": now_iso(), "finished_at": None, "status": RUNNING,
        "config": json.dumps(config, sort_keys=True), "model": model, "counts": None,
    })


def finish(db: Database, run_id: str, status: str, counts: dict[str, Any]) -> None:
    """Record the outcome; ``counts`` is the run summary (or an error)."""
    db.upsert_run(_launch_fields(db, run_id) | {
        "run_id": run_id, "status": status, "counts": json.dumps(counts),
        "finished_at": now_iso(),
    })


def fail(db: Database, run_id: str, reason: str) -> None:
    """Mark the run failed with ``reason`` and free its tranche leases."""
    finish(db, run_id, FAILED, {"error": reason[:2000]})
    TrancheLedger(db).fail_run(run_id)


def summary(db: Database, run_id: str) -> dict[str, Any] | None:
    """The summary a finished run recorded, or None."""
    rows = db.execute(f"SELECT counts FROM runs WHERE run_id = {db.placeholder}", [run_id])
    if not rows or not rows[0][0]:
        return None
    data: dict[str, Any] = json.loads(rows[0][0])
    return data


def _launch_fields(db: Database, run_id: str) -> dict[str, Any]:
    """What ``start`` wrote (kept by ``finish``); placeholders if it never ran."""
    rows = db.execute(
        f"SELECT started_at, config, model FROM runs WHERE run_id = {db.placeholder}", [run_id])
    if not rows:
        return {"started_at": "", "config": "{}", "model": ""}
    return dict(zip(("started_at", "config", "model"), rows[0]))
