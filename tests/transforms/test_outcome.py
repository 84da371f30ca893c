"""SummariseRun: counts summed per tranche, the run row, the ledger and the summary file."""

from __future__ import annotations

import json
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that

from store import run_records
from store.database import connect
from store.ledger import TrancheLedger
from store.schema import DEAD_LETTERS, PREDICTIONS
from store.session import DatabaseSettings
from transforms.outcome import (
    INCOMPLETE,
    RATIO_EXCEEDED,
    SUCCEEDED,
    SummariseRun,
    summarise,
    tranche_outcome,
)


def test_summary_derives_valid_totals_ratio_and_status() -> None:
    per = {"t1": {"read": 10, "dead_read": 1, "dead_validate": 2, "dead_lettered": 4,
                  "scored": 6, "written": 6, "dead_inference": 1},
           "t2": {"read": 10, "scored": 10, "written": 10}}
    s = summarise("r", per, max_ratio=0.5)
    assert s["tranches"]["t1"]["valid"] == 7 and s["tranches"]["t2"]["dead_lettered"] == 0
    assert s["total"]["read"] == 20 and s["total"]["written"] == 16
    assert s["dead_letter_ratio"] == 0.2 and s["status"] == SUCCEEDED
    # The run's share (0.2) is within 0.25, but t1's own (0.4) is not.
    assert summarise("r", per, max_ratio=0.25)["status"] == RATIO_EXCEEDED
    assert tranche_outcome(s["tranches"]["t1"], 0.25) == (
        "failed", "dead-letter ratio 0.4000 > max_dead_letter_ratio 0.25")
    assert tranche_outcome(s["tranches"]["t2"], 0.25) == ("completed", "")
    lost = per | {"t2": {"read": 10, "scored": 10, "written": 9}}
    assert summarise("r", lost, max_ratio=0.5)["status"] == INCOMPLETE
    assert summarise("r", {}, 0.0)["status"] == SUCCEEDED  # nothing read: nothing exceeded


def test_summarise_run_records_the_run_and_completes_only_accounted_tranches(
        tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    db = connect(url)
    db.init_schema()
    run_records.start(db, "run-1", {"k": "v"}, "demo:1")
    ledger = TrancheLedger(db)
    for t in ("t1", "t2", "t3"):
        assert ledger.acquire(t, "demo", "1", "fp", [], "run-1", 600)[0]
    # written is counted in the database: t1 has 4 rows of this run, t2 only 2 of 3.
    rows = [PREDICTIONS.row({
        "doc_id": f"{t}-{i}", "tranche": t, "label": "x", "score": 0.5, "top_k": "[]",
        "model_name": "demo", "model_version": "1", "model_sha256": "ab" * 32,
        "run_id": "run-1", "scored_at": "2026-01-01T00:00:00+00:00", "source_file": "f",
        "position": i, "metadata": None}) for t, n in (("t1", 4), ("t2", 2)) for i in range(n)]
    db.upsert_predictions(rows)
    # dead_lettered is counted in the database too: t1's one dead letter has its row.
    db.upsert_dead_letters([_dead_letter("t1", 1)])
    stats = [("t1", {"read": 5}), ("t1", {"scored": 4, "written": 4}),
             ("t1", {"dead_lettered": 1, "dead_read": 1}), ("t2", {"read": 3}),
             ("t2", {"scored": 3, "written": 3})]
    out = tmp_path / "out"

    def check(summaries: list[dict[str, object]]) -> None:
        assert len(summaries) == 1 and summaries[0]["run_id"] == "run-1"

    with test_pipeline.TestPipeline(runner="FnApiRunner") as p:
        summary = p | beam.Create(stats) | SummariseRun(
            DatabaseSettings(url), str(out), "run-1", 0.5, ["t1", "t2", "t3"])
        assert_that(summary, check)
    recorded = run_records.summary(db, "run-1")
    assert recorded is not None
    assert recorded["tranches"]["t3"] == {"read": 0, "valid": 0, "scored": 0,
                                          "dead_lettered": 0, "written": 0}
    assert json.loads((out / "_runs" / "run-1.json").read_text()) == recorded
    status = {t: ledger.get(t, "demo", "1").status for t in ("t1", "t2", "t3")}  # type: ignore[union-attr]
    assert status == {"t1": "completed", "t2": "failed", "t3": "completed"}
    assert db.execute("SELECT status, model, config FROM runs") == [
        ("incomplete", "demo:1", '{"k": "v"}')]
    assert recorded["tranches"]["t2"]["written"] == 2
    db.close()


def _dead_letter(tranche: str, position: int) -> tuple[object, ...]:
    return DEAD_LETTERS.row({"run_id": "run-1", "tranche": tranche, "source_file": "f",
                             "position": position, "stage": "read", "reason": "bad",
                             "payload": ""})


def test_a_tranche_whose_dead_letters_are_fewer_rows_than_reported_is_not_completed(
        tmp_path: Path) -> None:
    """Dead letters are counted in the database: two that the table's key makes one row
    (same file, position and stage) leave the tranche one record short, failed."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    db = connect(url)
    db.init_schema()
    run_records.start(db, "run-1", {}, "demo:1")
    ledger = TrancheLedger(db)
    assert ledger.acquire("t1", "demo", "1", "fp", [], "run-1", 600)[0]
    db.upsert_dead_letters([_dead_letter("t1", 0), _dead_letter("t1", 0)])
    stats = [("t1", {"read": 2}), ("t1", {"dead_lettered": 2, "dead_read": 2})]
    with test_pipeline.TestPipeline(runner="FnApiRunner") as p:
        _ = p | beam.Create(stats) | SummariseRun(
            DatabaseSettings(url), str(tmp_path / "out"), "run-1", 1.0, ["t1"])
    recorded = run_records.summary(db, "run-1")
    assert recorded is not None and recorded["status"] == "incomplete"
    assert recorded["tranches"]["t1"]["dead_lettered"] == 1
    entry = ledger.get("t1", "demo", "1")
    assert entry is not None and entry.status == "failed"
    db.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_wave_whose_record_fails_completes_none_of_its_tranches(
        backend: str, tmp_path: Path, request: pytest.FixtureRequest,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A wave's tranches and the run's record are one transaction: a failure while
    recording (here the run's record refused) leaves every tranche as it was, never
    some completed and the rest failed by the stop that follows."""
    url = (f"sqlite:///{tmp_path / 's.db'}" if backend == "sqlite"
           else request.getfixturevalue("pg_url"))
    db = connect(url)
    db.init_schema()
    run_records.start(db, "run-1", {}, "demo:1")
    ledger = TrancheLedger(db)
    for t in ("t1", "t2"):
        assert ledger.acquire(t, "demo", "1", "fp", [], "run-1", 600)[0]

    def refused(*_args: object) -> bool:
        raise ValueError("the run's record is refused")

    monkeypatch.setattr(run_records, "finish", refused)
    with pytest.raises(Exception, match="record is refused"), \
            test_pipeline.TestPipeline(runner="FnApiRunner") as p:
        _ = p | beam.Create([("t1", {"read": 0}), ("t2", {"read": 0})]) | SummariseRun(
            DatabaseSettings(url), str(tmp_path / "out"), "run-1", 0.5, ["t1", "t2"])
    assert [ledger.get(t, "demo", "1").status for t in ("t1", "t2")] == [  # type: ignore[union-attr]
        "running", "running"]
    db.close()
