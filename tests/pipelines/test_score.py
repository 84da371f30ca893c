"""``run(argv, test_pipeline=None)``: the entry every caller shares."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from apache_beam.testing import test_pipeline

from landing.samples import make_docs, write_tranche
from pipelines.orchestration.exit_codes import EXIT_ERROR, EXIT_OK
from pipelines.orchestration.score import run
from tests.pipelines.helpers import MODEL

DAY = "2026-01-05"


@pytest.fixture
def landing(tmp_path: Path) -> str:
    root = tmp_path / "landing"
    write_tranche(str(root), DAY, list(make_docs(120, seed=4, prefix="r")), "jsonl")
    return str(root)


def _args(landing: str, registry: str, tmp_path: Path, *extra: str) -> list[str]:
    return ["--date", DAY, "--model", MODEL, "--input-root", landing, "--registry", registry,
            "--db", f"sqlite:///{tmp_path / 's.db'}", "--output-dir", str(tmp_path / "out"),
            *extra]


def _count(db: Path, table: str) -> int:
    if not db.exists():
        return 0
    with sqlite3.connect(db) as conn:
        try:
            return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
        except sqlite3.OperationalError:
            return 0


def test_run_scores_on_the_callers_test_pipeline(
        landing: str, registry_root: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    rc = run(_args(landing, registry_root, tmp_path),
             test_pipeline=test_pipeline.TestPipeline(runner="FnApiRunner"))
    out = capsys.readouterr().out
    assert rc == EXIT_OK
    assert f"{DAY}         120       120       120       0       120  ok" in out
    assert _count(tmp_path / "s.db", "predictions") == 120


DATAFLOW = ["--runner", "DataflowRunner", "--project", "beamscore-project",
            "--region", "europe-west1", "--temp_location", "gs://beamscore-bucket/tmp",
            "--staging_location", "gs://beamscore-bucket/staging"]


@pytest.mark.parametrize("extra, message", [
    (["--runner", "DirectRuner"], "runner 'DirectRuner' cannot be used"),
    (["--runner", "DataflowRunner"], "Missing required option: project"),
    (["--runner", "DataflowRunner", "--project", "p", "--temp_location", "gs://b/t"],
     "Invalid GCS bucket (gs://b/t)"),
    ([*DATAFLOW, "--sink-max-rows-per-second", "100"], "sink.max_rows_per_second"),
])
def test_a_configuration_error_leaves_no_run_and_no_lease(
        landing: str, registry_root: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str], extra: list[str], message: str) -> None:
    """A runner typo, a runner's missing options, a rate limit on a distributed runner
    without Redis or a VM count: refused at launch, before any run row or lease."""
    rc = run(_args(landing, registry_root, tmp_path, *extra))
    assert rc == EXIT_ERROR
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert _count(tmp_path / "s.db", "runs") == 0
    assert _count(tmp_path / "s.db", "tranches") == 0


def test_flags_that_are_neither_beamscore_nor_beam_options_are_a_usage_error(
        landing: str, registry_root: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        run(_args(landing, registry_root, tmp_path, "--no-such-option", "1"))
    assert exc.value.code == 2
    assert "--no-such-option" in capsys.readouterr().err
    assert _count(tmp_path / "s.db", "runs") == 0


@pytest.mark.parametrize("zone, expected", [("UTC", "2026-11-30"), ("Asia/Tokyo", "2026-12-01"),
                                            ("America/Los_Angeles", "2026-11-30")])
def test_yesterday_is_yesterday_in_the_schedule_time_zone(zone: str, expected: str) -> None:
    import argparse
    import datetime as dt

    from pipelines.orchestration.score import requested_dates

    args = argparse.Namespace(date=None, date_from=None, date_to=None)
    now = dt.datetime(2026, 12, 1, 23, 30, tzinfo=dt.timezone.utc)  # Dec 2, 08:30 in Tokyo
    assert requested_dates(args, zone, now) == [dt.date.fromisoformat(expected)]


def test_progress_is_reported_job_wide_while_the_run_writes(
        landing: str, registry_root: str, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO")
    rc = run(_args(landing, registry_root, tmp_path, "--progress-seconds", "0.3",
                   "--sink-max-rows-per-second", "60", "--sink-batch-rows", "10"))
    assert rc == EXIT_OK
    lines = [r.getMessage() for r in caplog.records
             if r.getMessage().startswith("progress: ")]
    assert len(lines) >= 2, lines
    assert all(" of about " in m and "docs/s, ETA" in m for m in lines)


def test_a_job_staged_for_a_template_launcher_finishes_its_run_itself(
        landing: str, registry_root: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """With ``--template_location`` the launcher cannot wait (the job starts after it
    exits): it takes long leases, stages the job and exits; the job records the run,
    frees the leases and writes the monitoring rows and the report as its last step."""
    from store.ledger import TrancheLedger

    leases: list[float] = []
    acquire = TrancheLedger.acquire

    def spy(self: TrancheLedger, *args: object) -> object:
        leases.append(float(args[-1]))  # type: ignore[arg-type]
        return acquire(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(TrancheLedger, "acquire", spy)
    rc = run(_args(landing, registry_root, tmp_path,
                   f"--template_location={tmp_path / 'staging' / 'job.json'}"),
             test_pipeline=test_pipeline.TestPipeline(runner="FnApiRunner"))
    out = capsys.readouterr().out
    assert rc == EXIT_OK
    assert "job staged for the template launcher" in out
    assert leases == [43_200.0]
    with sqlite3.connect(tmp_path / "s.db") as conn:
        (run_id, status), = conn.execute("SELECT run_id, status FROM runs").fetchall()
        ledger = conn.execute("SELECT status, lease_until FROM tranches").fetchall()
        empty = conn.execute("SELECT n FROM monitoring WHERE metric = 'empty_share'").fetchall()
    assert status == "succeeded" and ledger == [("completed", None)]
    assert empty == [(120,)]  # a launcher-side figure, written by the job
    assert (tmp_path / "out" / "_reports" / f"{run_id}.html").stat().st_size > 0
    # The leases belonged to the job, not to the launcher that exits: no process id.
    assert _rows(tmp_path / "s.db", "SELECT pid FROM tranches") == [(0,)]
    # Nothing left to score, or a tranche missing: the launch still stages a job (one that
    # does nothing) and exits 0, or Dataflow would fail the launch.
    rest = _args(landing, registry_root, tmp_path)[2:]  # without --date
    again = run(["--from", DAY, "--to", "2026-01-06", *rest,
                 f"--template_location={tmp_path / 'staging' / 'job2.json'}"],
                test_pipeline=test_pipeline.TestPipeline(runner="FnApiRunner"))
    captured = capsys.readouterr()
    assert again == EXIT_OK
    assert "status skipped (the staged job does nothing)" in captured.out
    assert "missing tranche(s), not in the staged job: 2026-01-06" in captured.err


def _rows(db: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql).fetchall()


class _Job:
    def __init__(self, state: str, cancel_error: Exception | None = None):
        self.state, self.cancelled, self._error = state, False, cancel_error

    def cancel(self) -> None:
        if self._error:
            raise self._error
        self.cancelled = True


def test_a_stopped_launcher_cancels_a_job_that_runs_elsewhere() -> None:
    from pipelines.orchestration.score import cancel_job

    running, done = _Job("RUNNING"), _Job("DONE")
    cancel_job(running)
    cancel_job(done)
    assert running.cancelled and not done.cancelled
    cancel_job(_Job("RUNNING", NotImplementedError()))  # a runner that cannot cancel
    cancel_job(_Job("RUNNING", RuntimeError("service unavailable")))  # logged, not raised


def test_a_database_gone_while_marking_the_run_failed_keeps_the_original_error(
        landing: str, registry_root: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    import pipelines.orchestration.score as score

    def boom(*_: object, **__: object) -> None:
        raise RuntimeError("the tranche ledger broke")

    def database_gone(*_: object) -> None:
        raise ConnectionError("database unreachable")

    monkeypatch.setattr(score, "acquire_tranches", boom)
    monkeypatch.setattr(score, "fail_run", database_gone)
    rc = run(_args(landing, registry_root, tmp_path))
    assert rc == EXIT_ERROR
    err = capsys.readouterr().err
    assert "the tranche ledger broke" in err and "Traceback" not in err
    assert any("could not mark run" in r.getMessage() and "database unreachable" in
               r.getMessage() for r in caplog.records)
