"""The run record: started, finished with its summary, or failed with its leases freed."""

from __future__ import annotations

import json
import re
from pathlib import Path

from store import run_records
from store.database import connect
from store.ledger import TrancheLedger


def test_start_then_finish_keeps_the_launch_fields(tmp_path: Path) -> None:
    db = connect(f"sqlite:///{tmp_path / 'r.db'}")
    db.init_schema()
    run_id = run_records.new_run_id()
    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{6}", run_id)
    run_records.start(db, run_id, {"workers": 2}, "demo:3")
    assert run_records.summary(db, run_id) is None
    run_records.finish(db, run_id, "succeeded", {"total": {"read": 5}})
    [(status, model, config, started, finished)] = db.execute(
        "SELECT status, model, config, started_at, finished_at FROM runs")
    assert (status, model, json.loads(config)) == ("succeeded", "demo:3", {"workers": 2})
    assert started <= finished
    assert run_records.summary(db, run_id) == {"total": {"read": 5}}
    db.close()


def test_fail_records_the_reason_and_frees_the_leases(tmp_path: Path) -> None:
    db = connect(f"sqlite:///{tmp_path / 'r.db'}")
    db.init_schema()
    run_records.start(db, "run-1", {}, "demo:1")
    ledger = TrancheLedger(db)
    assert ledger.acquire("2026-01-01", "demo", "1", "fp", [], "run-1", 3600)[0]
    run_records.fail(db, "run-1", "RuntimeError: boom")
    assert db.execute("SELECT status FROM runs") == [("failed",)]
    assert run_records.summary(db, "run-1") == {"error": "RuntimeError: boom"}
    assert ledger.acquire("2026-01-01", "demo", "1", "fp", [], "run-2", 3600)[0]
    db.close()


def test_dead_letters_are_counted_by_kind_without_the_records_own_details(
        tmp_path: Path) -> None:
    db = connect(f"sqlite:///{tmp_path / 'r.db'}")
    db.init_schema()
    reasons = [("read", "malformed CSV row: line 17: unexpected end of data"),
               ("read", "malformed CSV row: line 18: expected 2 fields, got 3"),
               ("read", "unreadable parquet file: gs://b/x.parquet: OSError: gone"),
               ("dedupe", "duplicate id in tranche: first at /in/a.jsonl position 3"),
               ("dedupe", "duplicate id in tranche: first at /in/a.jsonl position 9"),
               ("dedupe", "duplicate id in tranche: first at /in/b.jsonl position 1"),
               ("validate", "missing id")]
    db.upsert_dead_letters([("r1", "2026-01-01", f"/in/{i}.csv", i, stage, reason, "{}")
                            for i, (stage, reason) in enumerate(reasons)])
    assert run_records.dead_letters_by_reason(db, "r1") == [
        ("dedupe", "duplicate id in tranche", 3), ("read", "malformed CSV row", 2),
        ("read", "unreadable parquet file", 1), ("validate", "missing id", 1)]
    assert run_records.dead_letters_by_reason(db, "r1", "2026-01-02") == []
    db.close()
