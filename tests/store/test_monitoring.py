"""The tracking tables on SQLite and PostgreSQL: metric rows upserted by their key (a
rerun replaces, never duplicates), history by model version and run, and retraining
requests with what became of their command."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from store import monitoring
from store.database import Database, connect
from store.schema import TRANCHES


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    url = (f"sqlite:///{tmp_path / 'm.db'}" if request.param == "sqlite"
           else request.getfixturevalue("pg_url"))
    database = connect(url)
    database.init_schema()
    yield database
    database.close()


def _row(run_id: str, metric: str, value: float, status: str = "ok", slice_: str = "",
         version: str = "1", tranche: str = "2026-01-01") -> dict[str, Any]:
    return {"run_id": run_id, "tranche": tranche, "model_name": "demo",
            "model_version": version, "metric": metric, "slice": slice_, "value": value,
            "n": 500, "ci_low": None, "ci_high": None, "threshold": 0.2, "status": status}


def test_rows_are_upserted_by_run_tranche_metric_and_slice(db: Database) -> None:
    monitoring.write_rows(db, [_row("r1", "class_psi", 0.5, "alert"),
                               _row("r1", "class_share", 0.3, slice_="billing"),
                               _row("r1", "class_share", 0.7, slice_="shipping")])
    monitoring.write_rows(db, [_row("r1", "class_psi", 0.1)])  # a rerun of the run's tranche
    rows = monitoring.rows_of_run(db, "r1")
    assert [(r["metric"], r["slice"], r["value"], r["status"]) for r in rows] == [
        ("class_psi", "", 0.1, "ok"), ("class_share", "billing", 0.3, "ok"),
        ("class_share", "shipping", 0.7, "ok")]
    assert rows[0]["ci_low"] is None and rows[0]["n"] == 500


def test_history_selects_the_model_version_runs_and_metrics(db: Database) -> None:
    monitoring.write_rows(db, [_row("r1", "class_psi", 0.5), _row("r2", "class_psi", 0.6),
                               _row("r2", "score_ks", 0.2), _row("r3", "class_psi", 0.7),
                               _row("r4", "class_psi", 0.9, version="2")])
    found = monitoring.history(db, "demo", "1", ["class_psi"], ["r1", "r2", "r4"])
    assert sorted((r["run_id"], r["value"]) for r in found) == [("r1", 0.5), ("r2", 0.6)]
    assert monitoring.history(db, "demo", "1", [], ["r1"]) == []
    assert monitoring.history(db, "demo", "1", ["class_psi"], []) == []


def test_a_trigger_records_its_reasons_runs_and_command_outcome(db: Database) -> None:
    first = monitoring.add_trigger(db, "demo", "1", ["accuracy 0.4 on 2026-01-01"], ["r1"],
                                   "beamscore train --docs x --name demo")
    second = monitoring.add_trigger(db, "demo", "2", ["class_psi alert in 2 runs in a row"],
                                    ["r3", "r2"], "")
    monitoring.finish_trigger(db, first.trigger_id, "command_failed", 3)
    [stored] = monitoring.triggers(db, "demo", "1")
    assert stored.trigger_id == first.trigger_id
    assert (stored.reasons, stored.run_ids) == (["accuracy 0.4 on 2026-01-01"], ["r1"])
    assert (stored.status, stored.command_exit_code) == ("command_failed", 3)
    assert dt.datetime.fromisoformat(stored.created_at) == dt.datetime.fromisoformat(
        first.created_at)
    assert [t.trigger_id for t in monitoring.triggers(db, "demo")] == [
        first.trigger_id, second.trigger_id]
    assert monitoring.triggers(db, "other") == []


def _ledger(db: Database, tranche: str, run_id: str, status: str = "completed",
            version: str = "1") -> None:
    """The tranche ledger's row: ``run_id`` scored ``tranche`` last."""
    db.upsert(TRANCHES, [TRANCHES.row({
        "tranche": tranche, "model_name": "demo", "model_version": version,
        "fingerprint": "f", "files": "[]", "run_id": run_id, "status": status, "counts": None,
        "lease_until": None, "started_at": "2026-02-01T00:00:00.000+00:00",
        "finished_at": None, "host": "h", "pid": 1, "fence": 1})])


def test_latest_by_tranche_holds_the_figures_of_each_days_last_scoring(db: Database
                                                                      ) -> None:
    """The ledger says which run scored a day last: its figures count, an earlier run's
    do not (even when the last one measured nothing); a day not completed counts unless
    this run is scoring it; other versions' days are left out."""
    monitoring.write_rows(db, [
        _row("r1", "class_psi", 0.5, "alert", tranche="2026-01-01"),
        _row("r1", "class_share", 0.1, "alert", slice_="billing", tranche="2026-01-01"),
        _row("r2", "class_psi", 0.1, "ok", tranche="2026-01-01"),  # scored again: ok now
        _row("r2", "class_psi", 0.6, "alert", tranche="2026-01-02"),
        _row("r3", "score_ks", 0.3, "alert", tranche="2026-01-03"),
        _row("r3", "class_psi", 0.2, "insufficient", tranche="2026-01-03"),
        _row("r3", "class_psi", 0.9, "alert", tranche="2026-01-04"),
        _row("r5", "class_psi", 0.9, "alert", tranche="2026-01-06"),
        _row("r6", "class_psi", 0.9, "alert", tranche="2026-01-06", version="2")])
    for tranche, run_id, status in [("2026-01-01", "r2", "completed"),
                                    ("2026-01-02", "r2", "completed"),
                                    ("2026-01-03", "r3", "completed"),
                                    ("2026-01-04", "r4", "completed"),  # r4 tracked nothing
                                    ("2026-01-05", "r3", "failed"),
                                    ("2026-01-06", "r5", "running")]:
        _ledger(db, tranche, run_id, status)
    _ledger(db, "2026-01-06", "r6", "completed", version="2")
    latest = monitoring.latest_by_tranche(db, "demo", "1", ["class_psi", "score_ks"], "r5",
                                          "alert")
    assert latest == {"2026-01-01": ("r2", set()), "2026-01-02": ("r2", {"class_psi"}),
                      "2026-01-03": ("r3", {"score_ks"}), "2026-01-04": ("r4", set()),
                      "2026-01-06": ("r5", {"class_psi"})}
    assert "2026-01-06" not in monitoring.latest_by_tranche(db, "demo", "1", ["class_psi"],
                                                            "r9", "alert")
    assert monitoring.latest_by_tranche(db, "demo", "1", [], "r5", "alert") == {}


def test_two_runs_ending_together_make_one_request_within_the_cooldown(
        db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each reads the model version's triggers, sees none, and writes one: unless the
    read and the write are one transaction no other process interleaves with, both
    write (a pause after the read lets the other read too)."""
    import threading
    import time

    setup = connect(db_url)
    setup.init_schema()
    setup.close()
    read = monitoring.triggers

    def slow_read(*args: Any, **kwargs: Any) -> Any:
        found = read(*args, **kwargs)
        time.sleep(0.5)
        return found

    monkeypatch.setattr(monitoring, "triggers", slow_read)
    made: list[tuple[Any, Any]] = []

    def request(run_id: str) -> None:
        conn = connect(db_url)
        try:
            made.append(monitoring.add_trigger_after_cooldown(
                conn, "demo", "1", ["accuracy alert"], [run_id], "", cooldown_hours=24))
        finally:
            conn.close()

    threads = [threading.Thread(target=request, args=(run,)) for run in ("rA", "rB")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    monkeypatch.undo()
    check = connect(db_url)
    try:
        assert len(monitoring.triggers(check, "demo", "1")) == 1
    finally:
        check.close()
    [(new, none)] = [m for m in made if m[0] is not None]
    [(none2, recent)] = [m for m in made if m[0] is None]
    assert none is None and none2 is None and recent.trigger_id == new.trigger_id
