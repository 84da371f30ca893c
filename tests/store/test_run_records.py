"""The run record: started, finished with its summary, or failed with its leases freed."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from store import run_records
from store.database import connect
from store.ledger import TrancheLedger
from store.schema import PREDICTIONS


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


def test_a_failed_run_in_waves_keeps_its_finished_waves_counts(tmp_path: Path) -> None:
    """A run's finished waves record their tranches' counts; failing it later (a stop
    signal) keeps them beside the reason, and failing a run that had ended already
    changes nothing and says so."""
    db = connect(f"sqlite:///{tmp_path / 'r.db'}")
    db.init_schema()
    run_records.start(db, "run-1", {}, "demo:1")
    run_records.record_wave(db, "run-1", {"2026-01-01": {"read": 3}})
    run_records.record_wave(db, "run-1", {"2026-01-02": {"read": 4}})
    assert run_records.waves_recorded(db, "run-1") == {"2026-01-01": {"read": 3},
                                                       "2026-01-02": {"read": 4}}
    assert run_records.fail(db, "run-1", "interrupted", "SIGTERM") is True
    assert run_records.summary(db, "run-1") == {
        "error": "interrupted", "detail": "SIGTERM",
        "tranches": {"2026-01-01": {"read": 3}, "2026-01-02": {"read": 4}}}
    run_records.start(db, "run-2", {}, "demo:1")
    run_records.finish(db, "run-2", "succeeded", {"total": {"read": 5}})
    assert run_records.fail(db, "run-2", "interrupted") is False
    assert run_records.summary(db, "run-2") == {"total": {"read": 5}}
    run_records.start(db, "run-3", {}, "demo:1")  # loses a later tranche to another run
    run_records.record_wave(db, "run-3", {"2026-01-01": {"read": 3}})
    run_records.mark_abandoned(db, "run-3", by="run-4")
    run_records.lease_lost(db, "run-3", ["2026-01-02"])
    summary = run_records.summary(db, "run-3")
    assert summary is not None and summary["error"] == "lease lost"
    assert summary["tranches"] == {"2026-01-01": {"read": 3}}
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


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql",
                                                            marks=pytest.mark.postgres)])
def test_finish_records_a_run_whose_start_was_never_recorded(
        backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    url = (f"sqlite:///{tmp_path / 'r.db'}" if backend == "sqlite"
           else request.getfixturevalue("pg_url"))
    db = connect(url)
    db.init_schema()
    run_records.start(db, "run-1", {"workers": 1}, "demo:1")
    run_records.finish(db, "run-1", "succeeded", {"total": {"read": 1}})
    run_records.finish(db, "run-2", "failed", {"error": "lost"})  # no start recorded
    records = {r.run_id: r for r in run_records.latest(db, 10)}
    assert records["run-1"].config == {"workers": 1} and records["run-1"].model == "demo:1"
    assert records["run-1"].status == "succeeded" and records["run-1"].finished_at
    assert records["run-2"].status == "failed" and records["run-2"].error == "lost"
    assert records["run-2"].config == {} and records["run-2"].finished_at
    db.close()


def test_written_rows_counts_this_runs_predictions_per_tranche(tmp_path: Path) -> None:
    db = connect(f"sqlite:///{tmp_path / 'r.db'}")
    db.init_schema()
    rows = [PREDICTIONS.row({
        "doc_id": f"d{i}", "tranche": tranche, "label": "x", "score": 0.5, "top_k": "[]",
        "model_name": "demo", "model_version": "1", "model_sha256": "ab" * 32,
        "run_id": run_id, "scored_at": "2026-01-01T00:00:00+00:00", "source_file": "f",
        "position": i, "metadata": None})
        for i, (tranche, run_id) in enumerate([("t1", "r1"), ("t1", "r1"), ("t1", "r0"),
                                               ("t2", "r1")])]
    db.upsert_predictions(rows)
    assert run_records.written_rows(db, "r1", ["t1", "t2", "t3"]) == {"t1": 2, "t2": 1, "t3": 0}
    db.close()


def test_tranche_rows_count_this_runs_rows_and_what_superseding_would_delete(
        tmp_path: Path) -> None:
    db = connect(f"sqlite:///{tmp_path / 'r.db'}")
    db.init_schema()
    for run_id in ("r1", "r0"):
        run_records.start(db, run_id, {}, "demo:1")
    rows = [PREDICTIONS.row({
        "doc_id": f"d{i}", "tranche": tranche, "label": "x", "score": 0.5, "top_k": "[]",
        "model_name": "demo", "model_version": version, "model_sha256": "ab" * 32,
        "run_id": run_id, "scored_at": "2026-01-01T00:00:00+00:00", "source_file": "f",
        "position": i, "metadata": None})
        for i, (tranche, run_id, version) in enumerate([
            ("t1", "r1", "1"), ("t1", "r1", "1"), ("t1", "r0", "1"),  # one stale row
            ("t1", "r9", "2"),  # another version's row: not this model's, kept
            ("t2", "r1", "1")])]
    db.upsert_predictions(rows)
    found = run_records.tranche_rows(db, "r1", ["t1", "t2", "t3"])
    assert found == {"t1": (2, 1), "t2": (1, 0), "t3": (0, 0)}
    assert run_records.supersede_predictions(db, "r1", "t1") == found["t1"][1]
    assert run_records.tranche_rows(db, "r9", ["t1"]) == {"t1": (1, 0)}  # no record: no model
    db.close()


_ROW = st.tuples(st.sampled_from(["t1", "t2"]), st.sampled_from(["r0", "r1", "r2"]),
                 st.sampled_from(["1", "2"]))


@given(rows=st.lists(_ROW, max_size=30), run=st.sampled_from(["r0", "r1", "r2"]))
def test_tranche_rows_agree_with_counting_the_rows_and_with_what_superseding_deletes(
        rows: list[tuple[str, str, str]], run: str) -> None:
    """Differential: against counting the rows in Python; r0 and r1 are recorded runs of
    demo:1, r2 has no record (its rows are counted, nothing is stale for it)."""
    db = connect("sqlite:///:memory:")
    db.init_schema()
    for run_id in ("r0", "r1"):
        run_records.start(db, run_id, {}, "demo:1")
    db.upsert_predictions([PREDICTIONS.row({
        "doc_id": f"d{i}", "tranche": tranche, "label": "x", "score": 0.5, "top_k": "[]",
        "model_name": "demo", "model_version": version, "model_sha256": "ab" * 32,
        "run_id": run_id, "scored_at": "2026-01-01T00:00:00+00:00", "source_file": "f",
        "position": i, "metadata": None}) for i, (tranche, run_id, version) in enumerate(rows)])
    found = run_records.tranche_rows(db, run, ["t1", "t2", "t3"])
    recorded = run != "r2"
    for t in ("t1", "t2", "t3"):
        mine = sum(1 for tr, r, _ in rows if tr == t and r == run)
        stale = sum(1 for tr, r, v in rows if tr == t and r != run and v == "1") if recorded \
            else 0
        assert found[t] == (mine, stale)
        assert run_records.supersede_predictions(db, run, t) == stale
    db.close()


@pytest.mark.parametrize("backend", ["sqlite",
                                     pytest.param("postgres", marks=pytest.mark.postgres)])
def test_a_runs_history_is_its_models_runs_up_to_it_whatever_ran_since(
        tmp_path: Path, backend: str, request: pytest.FixtureRequest) -> None:
    """A report regenerated later shows the runs of its model up to its own, not the
    latest runs of any model (1,000 runs of another model since made it empty)."""
    url = (f"sqlite:///{tmp_path / 'r.db'}" if backend == "sqlite"
           else request.getfixturevalue("pg_url"))
    db = connect(url)
    db.init_schema()
    for i in range(12):
        model = "demo:1" if i % 3 else "other:1"
        db.upsert_run({"run_id": f"r{i:02d}", "started_at": f"2026-01-{i + 1:02d}T00:00:00+00:00",
                       "finished_at": None, "status": "succeeded", "config": "{}",
                       "model": model, "counts": None, "host": "h", "pid": 1})
    for i in range(12, 40):  # another model's runs since
        db.upsert_run({"run_id": f"r{i:02d}", "started_at": f"2026-02-{i - 11:02d}T00:00:00+00:00",
                       "finished_at": None, "status": "succeeded", "config": "{}",
                       "model": "other:1", "counts": None, "host": "h", "pid": 1})
    record = run_records.get(db, "r07")
    assert record is not None
    found = run_records.of_model_up_to(db, record, 4)
    assert [r.run_id for r in found] == ["r07", "r05", "r04", "r02"]
    assert [r.run_id for r in run_records.of_model_up_to(db, record, 100)] == [
        "r07", "r05", "r04", "r02", "r01"]
    db.close()
