"""No stuck runs: stop signals, a killed launcher, and ``beamscore runs`` (SQLite, real
processes)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from landing.samples import make_docs, write_tranche
from store import run_records
from store.database import connect
from store.ledger import Holder, TrancheLedger
from tests.data import sqlite_rows
from tests.pipelines.helpers import run_cli, with_model, workers_left

DAY = "2026-04-01"
REPO = Path(__file__).resolve().parents[2]
N_DOCS = 3000


@pytest.fixture
def landing(tmp_path: Path) -> Path:
    root = tmp_path / "landing"
    docs = list(make_docs(N_DOCS, seed=21, prefix="r", max_chars=200))
    for i in range(3):
        write_tranche(str(root), DAY, docs[i * 1000:(i + 1) * 1000], "jsonl", name=f"p{i}")
    return root


def _args(landing: Path, registry: str, tmp: Path, *extra: str) -> list[str]:
    return with_model(["score", "--date", DAY, "--input-root", str(landing), "--registry",
                       registry, "--db", f"sqlite:///{tmp / 's.db'}", "--output-dir",
                       str(tmp / "out"), *extra])


def _start(args: list[str]) -> subprocess.Popen[str]:
    """``beamscore`` in its own process, slowed by a rate limit so it can be stopped."""
    return subprocess.Popen([sys.executable, "-m", "pipelines.cli", *with_model(args),
                             "--sink-max-rows-per-second", "500", "--sink-batch-rows", "100"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_rows(db: Path, proc: subprocess.Popen[str], timeout: float = 90,
                   min_rows: int = 1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            if sqlite_rows(db, "SELECT count(*) FROM predictions")[0][0] >= min_rows:
                return
        except Exception:  # noqa: BLE001 - not created yet
            pass
        time.sleep(0.05)
    raise AssertionError("the run never started writing")


def _wait_for_completed(db: Path, proc: subprocess.Popen[str], n: int,
                        timeout: float = 120) -> None:
    """Until ``n`` tranches are completed in the ledger, the run still going."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            done = sqlite_rows(db, "SELECT count(*) FROM tranches WHERE status = 'completed'")
        except Exception:  # noqa: BLE001 - not created yet
            done = [(0,)]
        if done[0][0] >= n:
            return
        time.sleep(0.05)
    raise AssertionError(f"{n} tranche(s) never completed")


def _run(db: Path) -> run_records.RunRecord:
    conn = connect(f"sqlite:///{db}")
    try:
        [first] = run_records.latest(conn, 100)[-1:]
        return first
    finally:
        conn.close()


@pytest.mark.slow
@pytest.mark.parametrize("sig, code, workers", [(signal.SIGTERM, 143, "2"),
                                                (signal.SIGINT, 130, "1")])
def test_a_stop_signal_fails_the_run_frees_its_leases_and_stops_its_workers(
        landing: Path, registry_root: str, tmp_path: Path, sig: int, code: int,
        workers: str) -> None:
    proc = _start(_args(landing, registry_root, tmp_path, "--workers", workers))
    _wait_for_rows(tmp_path / "s.db", proc)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert "Traceback" not in err
    last = [line for line in err.splitlines() if line.startswith("beamscore:")]
    assert last == [f"beamscore: stopped by {signal.Signals(sig).name}: run "
                    f"{_run(tmp_path / 's.db').run_id} marked failed (interrupted), its "
                    "tranches released"]
    record = _run(tmp_path / "s.db")
    assert record.status == "failed" and record.error == "interrupted"
    assert sqlite_rows(tmp_path / "s.db", "SELECT status, lease_until FROM tranches") == [
        ("failed", None)]
    assert workers_left() == []
    again = run_cli(*_args(landing, registry_root, tmp_path))
    assert again.rc == 0, again.err
    assert sqlite_rows(tmp_path / "s.db", "SELECT count(*), count(DISTINCT doc_id) FROM "
                                          "predictions") == [(N_DOCS, N_DOCS)]


@pytest.mark.slow
def test_an_interrupted_backfill_resumes_with_the_same_command(
        registry_root: str, tmp_path: Path) -> None:
    """--from/--to in one pipeline: the first day is already scored and skipped; the
    range run is stopped mid-way; the same command then scores what is left, with one
    row per document and the summary per tranche."""
    days = ["2026-04-01", "2026-04-02", "2026-04-03"]
    root = tmp_path / "landing"
    for k, day in enumerate(days):
        write_tranche(str(root), day, list(make_docs(1000, seed=30 + k, prefix=f"b{k}",
                                                     max_chars=200)), "jsonl")
    common = ["--input-root", str(root), "--registry", registry_root,
              "--db", f"sqlite:///{tmp_path / 's.db'}", "--output-dir", str(tmp_path / "out")]
    assert run_cli("score", "--date", days[0], *common).rc == 0
    backfill = ["score", "--from", days[0], "--to", days[-1], *common]
    proc = _start(backfill)
    _wait_for_rows(tmp_path / "s.db", proc, min_rows=1001)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    resumed = run_cli(*backfill)
    assert resumed.rc == 0, resumed.err
    assert f"{days[0]}    skipped: completed by run" in resumed.out
    for day in days[1:]:
        assert f"{day:<12}{1000:>10}{1000:>10}{1000:>10}{0:>8}{1000:>10}  ok" in resumed.out
    assert sqlite_rows(tmp_path / "s.db", "SELECT count(*), count(DISTINCT tranche || doc_id) "
                                          "FROM predictions") == [(3000, 3000)]


def _backfill_landing(tmp: Path, days: list[str], per_day: int) -> Path:
    root = tmp / "landing"
    for k, day in enumerate(days):
        write_tranche(str(root), day, list(make_docs(per_day, seed=40 + k, prefix=f"w{k}",
                                                     max_chars=200)), "jsonl")
    return root


@pytest.mark.slow
def test_a_backfill_stopped_in_its_second_wave_keeps_the_first_waves_tranches(
        registry_root: str, tmp_path: Path) -> None:
    """A range scored in waves (``--wave-records``: two days a wave here) completes each
    wave's tranches when its pipeline ends: stopped in the second wave, the run leaves
    the first wave's days completed and the rest failed, and the same command then
    scores only those; one row per document."""
    days = ["2026-04-01", "2026-04-02", "2026-04-03", "2026-04-04"]
    root = _backfill_landing(tmp_path, days, 600)
    db = tmp_path / "s.db"
    backfill = ["score", "--from", days[0], "--to", days[-1], "--input-root", str(root),
                "--registry", registry_root, "--db", f"sqlite:///{db}", "--output-dir",
                str(tmp_path / "out"), "--wave-records", "1000"]
    proc = _start(backfill)
    _wait_for_completed(db, proc, 2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    status = dict(sqlite_rows(db, "SELECT tranche, status FROM tranches"))
    # The stop lands in the second wave (a wave records its days in one transaction).
    assert [status[d] for d in days] == ["completed", "completed", "failed", "failed"], status
    assert "stopped by SIGTERM" in err and "marked failed (interrupted)" in err, err
    resumed = run_cli(*backfill)
    assert resumed.rc == 0, resumed.err
    for day in days:
        if status[day] == "completed":
            assert f"{day}    skipped: completed by run" in resumed.out
        else:
            assert f"{day:<12}{600:>10}{600:>10}{600:>10}{0:>8}{600:>10}  ok" in resumed.out
    assert sqlite_rows(db, "SELECT count(*), count(DISTINCT tranche || doc_id) "
                           "FROM predictions") == [(2400, 2400)]


@pytest.mark.slow
def test_a_tranche_rescored_by_another_run_after_its_wave_does_not_stop_the_run(
        registry_root: str, tmp_path: Path) -> None:
    """Run A scores three days in three waves; once its first wave has completed day 1,
    run B rescores day 1 (--force) while A's later waves run. Day 1 is no longer A's
    concern: A goes on, exits 0, and its summary still counts day 1 as its wave did."""
    days = ["2026-04-01", "2026-04-02", "2026-04-03"]
    root = _backfill_landing(tmp_path, days, 1500)  # A: 3 s a wave
    db = tmp_path / "s.db"
    common = ["--input-root", str(root), "--registry", registry_root, "--db",
              f"sqlite:///{db}", "--output-dir", str(tmp_path / "out")]
    proc = _start(["score", "--from", days[0], "--to", days[-1], *common,
                   "--wave-records", "1"])
    _wait_for_completed(db, proc, 1)
    rescore = run_cli("score", "--date", days[0], "--force", *common)
    assert rescore.rc == 0, rescore.err
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    runs = dict(sqlite_rows(db, "SELECT run_id, counts FROM runs"))
    [first] = [r for r, c in runs.items() if len(json.loads(c)["tranches"]) == 3]
    assert json.loads(runs[first])["tranches"][days[0]]["read"] == 1500
    ledger = sqlite_rows(db, "SELECT tranche, status, run_id FROM tranches ORDER BY tranche")
    assert [(t, s) for t, s, _ in ledger] == [(d, "completed") for d in days]
    assert ledger[0][2] != first and {r for _, _, r in ledger[1:]} == {first}
    times = dict((r, (st, fin)) for r, st, fin in sqlite_rows(
        db, "SELECT run_id, started_at, finished_at FROM runs"))
    assert times[ledger[0][2]][1] < times[first][1]  # B ended while A still ran
    assert sqlite_rows(db, "SELECT count(*), count(DISTINCT tranche || doc_id) "
                           "FROM predictions") == [(4500, 4500)]


@pytest.mark.slow
def test_a_forced_rescore_in_waves_keeps_a_later_days_results_until_its_wave(
        registry_root: str, tmp_path: Path) -> None:
    """``--force`` over three days in three waves, stopped in wave 2: the third day,
    whose wave never started, keeps the earlier run's prediction files and rows (a
    tranche is cleared when its own wave starts, not at launch)."""
    days = ["2026-04-01", "2026-04-02", "2026-04-03"]
    root = _backfill_landing(tmp_path, days, 600)
    db = tmp_path / "s.db"
    common = ["--from", days[0], "--to", days[-1], "--input-root", str(root), "--registry",
              registry_root, "--db", f"sqlite:///{db}", "--output-dir", str(tmp_path / "out")]
    assert run_cli("score", *common).rc == 0
    [(first,)] = sqlite_rows(db, "SELECT run_id FROM runs")
    files = sorted((tmp_path / "out" / f"dt={days[2]}").glob("predictions-*.parquet"))
    assert files
    proc = _start(["score", *common, "--force", "--wave-records", "1"])
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        if sqlite_rows(db, "SELECT count(*) FROM tranches WHERE status = 'completed' AND "
                           f"run_id != '{first}'")[0][0]:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert sorted((tmp_path / "out" / f"dt={days[2]}").glob("predictions-*.parquet")) == files
    assert sqlite_rows(db, f"SELECT count(*), min(run_id) FROM predictions WHERE tranche = "
                           f"'{days[2]}'") == [(600, first)]


def test_a_run_in_waves_records_one_summary_of_every_tranche(
        registry_root: str, tmp_path: Path) -> None:
    """Three waves (one day each), one run: its summary, its file and the exit code
    cover every tranche, counted as in one pipeline."""
    days = ["2026-04-01", "2026-04-02", "2026-04-03"]
    root = _backfill_landing(tmp_path, days, 300)
    db = tmp_path / "s.db"
    result = run_cli("score", "--from", days[0], "--to", days[-1], "--input-root", str(root),
                     "--registry", registry_root, "--db", f"sqlite:///{db}", "--output-dir",
                     str(tmp_path / "out"), "--wave-records", "1", "--workers", "2")
    assert result.rc == 0, result.err
    for day in days:
        assert f"{day:<12}{300:>10}{300:>10}{300:>10}{0:>8}{300:>10}  ok" in result.out
    [(status, counts)] = sqlite_rows(db, "SELECT status, counts FROM runs")
    summary = json.loads(counts)
    assert status == "succeeded" and sorted(summary["tranches"]) == days
    assert summary["total"]["read"] == summary["total"]["written"] == 900
    [run_file] = (tmp_path / "out" / "_runs").glob("*.json")
    assert json.loads(run_file.read_text())["tranches"] == summary["tranches"]
    assert sqlite_rows(db, "SELECT count(DISTINCT run_id), count(*) FROM tranches "
                           "WHERE status = 'completed'") == [(1, 3)]


@pytest.mark.slow
def test_a_run_released_while_it_runs_stops_with_exit_5_and_the_next_run_completes(
        landing: Path, registry_root: str, tmp_path: Path) -> None:
    """``beamscore runs release --force`` on a live run: its next fenced write fails, and
    it stops saying it was released (exit 5, recorded), not as a failed pipeline."""
    db = tmp_path / "s.db"
    proc = _start(_args(landing, registry_root, tmp_path))
    _wait_for_rows(db, proc)
    run_id = _run(db).run_id
    released = run_cli("runs", "release", run_id, "--force", "--db", f"sqlite:///{db}",
                       model=None)
    assert released.rc == 0, released.err
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 5, err
    assert err.strip().splitlines()[-1] == (
        "beamscore: released by `beamscore runs release` while it ran: this run wrote "
        "nothing after that and stops; the tranches it had not finished are left failed")
    shown = run_cli("runs", "show", run_id, "--db", f"sqlite:///{db}", model=None)
    assert "exit code 5" in shown.out, shown.out
    assert sqlite_rows(db, "SELECT status FROM tranches") == [("failed",)]
    again = run_cli(*_args(landing, registry_root, tmp_path))
    assert again.rc == 0, again.err
    assert sqlite_rows(db, "SELECT count(*), count(DISTINCT doc_id) FROM predictions") == [
        (N_DOCS, N_DOCS)]


def test_a_run_released_after_its_last_write_still_stops_with_exit_5(
        landing: Path, registry_root: str, tmp_path: Path, monkeypatch: Any) -> None:
    """Released once every row is written, just before the pipeline records the run:
    its closing writes change nothing of a released run and raise nothing, yet the run
    stops as released (exit 5, recorded), its tranche left failed for the next run."""
    from pipelines.commands.runs import release_run
    from store.session import DatabaseSettings
    from transforms import outcome

    url = f"sqlite:///{tmp_path / 's.db'}"
    record = outcome._RecordRunFn._record

    def released_first(fn: Any, db: Any, per_tranche: Any) -> Any:
        assert release_run(DatabaseSettings(url), fn._run_id, True)[0] == 0
        return record(fn, db, per_tranche)

    monkeypatch.setattr(outcome._RecordRunFn, "_record", released_first)
    result = run_cli(*_args(landing, registry_root, tmp_path, "--workers", "1"))
    assert result.rc == 5, result.err
    assert "released by `beamscore runs release` while it ran" in result.err
    [(status, counts)] = sqlite_rows(tmp_path / "s.db", "SELECT status, counts FROM runs")
    assert (status, json.loads(counts)["exit_code"]) == ("failed", 5)
    assert sqlite_rows(tmp_path / "s.db", "SELECT status FROM tranches") == [("failed",)]
    monkeypatch.undo()
    again = run_cli(*_args(landing, registry_root, tmp_path))
    assert again.rc == 0, again.err
    assert sqlite_rows(tmp_path / "s.db", "SELECT status FROM tranches") == [("completed",)]


@pytest.mark.slow
def test_a_worker_killed_before_its_bundles_ends_the_run_with_75_at_once(
        landing: Path, registry_root: str, tmp_path: Path) -> None:
    """A worker killed from outside (the out-of-memory killer) while the run waits on
    it: the runner's waits on that worker end when the fork server reports its death,
    so the run fails at once with exit 75 naming the signal, leaving nothing behind."""
    from tests.processes import children

    proc = _start(_args(landing, registry_root, tmp_path, "--workers", "2"))
    deadline = time.monotonic() + 60
    workers: list[int] = []
    while not workers and time.monotonic() < deadline:  # killed as soon as it starts,
        assert proc.poll() is None, proc.communicate()  # before its first bundle
        workers = [w for z in children(proc.pid) for w in children(z)]
        time.sleep(0.01)
    assert workers
    killed = time.monotonic()
    os.kill(workers[0], signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 75, err
    assert time.monotonic() - killed < 20
    assert "a worker process was lost mid-run (signal SIGKILL" in err
    assert sqlite_rows(tmp_path / "s.db", "SELECT status FROM runs") == [("failed",)]
    assert workers_left() == []


def test_a_stop_while_the_summary_is_printed_names_the_run_that_ended(
        landing: Path, registry_root: str, tmp_path: Path, monkeypatch: Any) -> None:
    """The run's record is final once its pipeline and closing steps are done: a stop
    while its summary is printed waits for the summary and the recorded exit code, then
    exits 143 naming the run as ended (not "no run was started")."""
    from pipelines.orchestration import score

    printed = score.format_summary

    def stopped_while_printing(*args: Any, **kwargs: Any) -> str:
        os.kill(os.getpid(), signal.SIGTERM)
        return printed(*args, **kwargs)

    monkeypatch.setattr(score, "format_summary", stopped_while_printing)
    result = run_cli(*_args(landing, registry_root, tmp_path))
    assert result.rc == 143, result.err
    run_id = _run(tmp_path / "s.db").run_id
    assert f"run {run_id}  model demo:1  status succeeded" in result.out
    assert f"stopped by SIGTERM: run {run_id} had ended before the stop" in result.err
    [(counts,)] = sqlite_rows(tmp_path / "s.db", "SELECT counts FROM runs")
    assert json.loads(counts)["exit_code"] == 0


@pytest.mark.slow
def test_after_sigkill_a_rerun_takes_over_at_once_and_completes(
        landing: Path, registry_root: str, tmp_path: Path) -> None:
    proc = _start(_args(landing, registry_root, tmp_path))
    _wait_for_rows(tmp_path / "s.db", proc)
    killed = _run(tmp_path / "s.db").run_id
    proc.kill()
    proc.communicate(timeout=30)
    started = time.monotonic()
    again = run_cli(*_args(landing, registry_root, tmp_path))
    assert again.rc == 0, again.err
    assert time.monotonic() - started < 60, "the rerun waited for the lease to expire"
    db = tmp_path / "s.db"
    assert sqlite_rows(db, "SELECT count(*), count(DISTINCT doc_id) FROM predictions") == [
        (N_DOCS, N_DOCS)]
    conn = connect(f"sqlite:///{db}")
    first = run_records.get(conn, killed)
    conn.close()
    assert first is not None and first.status == "failed" and first.error == "abandoned"
    listing = run_cli("runs", "list", "--db", f"sqlite:///{db}")
    assert listing.rc == 0 and killed in listing.out and "failed" in listing.out


def _fake_run(db_path: Path, run_id: str, holder: Holder) -> None:
    db = connect(f"sqlite:///{db_path}")
    db.init_schema()
    run_records.start(db, run_id, {"workers": 1}, "demo:1", holder=holder)
    TrancheLedger(db, holder=holder).acquire(DAY, "demo", "1", "fp", [], run_id, 3600)
    db.close()


def test_runs_release_refuses_a_live_run_here_unless_forced(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    _fake_run(db, "run-live", Holder.this_process())  # this test's own process: alive
    url = f"sqlite:///{db}"
    refused = run_cli("runs", "release", "run-live", "--db", url)
    assert refused.rc == 1 and "still running here" in refused.err
    forced = run_cli("runs", "release", "run-live", "--db", url, "--force")
    assert forced.rc == 0 and f"released 1 tranche lease(s): {DAY}" in forced.out
    assert sqlite_rows(db, "SELECT status FROM runs") == [("failed",)]
    assert sqlite_rows(db, "SELECT status, lease_until FROM tranches") == [("failed", None)]
    again = run_cli("runs", "release", "run-live", "--db", url)
    assert again.rc == 0 and "run-live was already failed; released 0" in again.out


def test_runs_release_frees_a_run_whose_process_is_gone(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    _fake_run(db, "run-dead", Holder(Holder.this_process().host, 2 ** 22 + 12345))
    released = run_cli("runs", "release", "run-dead", "--db", f"sqlite:///{db}")
    assert released.rc == 0, released.err
    assert f"run run-dead marked failed; released 1 tranche lease(s): {DAY}" in released.out
    assert sqlite_rows(db, "SELECT status FROM runs") == [("failed",)]
    assert sqlite_rows(db, "SELECT status, lease_until FROM tranches") == [("failed", None)]


def test_runs_show_gives_summary_dead_letters_model_and_config(
        registry_root: str, tmp_path: Path) -> None:
    root = tmp_path / "landing"
    write_tranche(str(root), DAY, list(make_docs(100, seed=2)), "jsonl", inject_bad=True)
    scored = run_cli("score", "--date", DAY, "--input-root", str(root), "--registry",
                     registry_root, "--db", f"sqlite:///{tmp_path / 's.db'}", "--output-dir",
                     str(tmp_path / "out"), "--max-dead-letter-ratio", "0.2")
    assert scored.rc == 0, scored.err
    run_id = _run(tmp_path / "s.db").run_id
    shown = run_cli("runs", "show", run_id, "--show-config", "--db",
                    f"sqlite:///{tmp_path / 's.db'}")
    assert shown.rc == 0
    out: Any = shown.out
    assert f"run {run_id}" in out and "status    succeeded" in out and "model     demo:1" in out
    assert f"tranche {DAY}: read 106, valid 100, scored 100, dead-lettered 6, written 100" in out
    assert "read       malformed JSON" in out and "validate   missing id" in out
    config = json.loads(out[out.index("config:\n") + len("config:\n"):])
    assert config["max_dead_letter_ratio"] == 0.2
    missing = run_cli("runs", "show", "nope", "--db", f"sqlite:///{tmp_path / 's.db'}")
    assert missing.rc == 1 and "no run nope" in missing.err


@pytest.mark.slow
def test_sigkill_in_the_middle_of_120k_documents_then_an_immediate_rerun(
        registry_root: str, tmp_path: Path) -> None:
    """The whole launcher killed mid-run (its fork server sees it gone and kills the
    workers); the rerun at once takes over, completes, and leaves no duplicates."""
    n = 120_000
    root = tmp_path / "landing"
    docs = make_docs(n, seed=23, prefix="k", min_chars=100, max_chars=300)
    for i in range(4):
        write_tranche(str(root), DAY, [next(docs) for _ in range(n // 4)], "jsonl",
                      name=f"p{i}")
    args = _args(root, registry_root, tmp_path, "--workers", "2")
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    db = tmp_path / "s.db"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            if sqlite_rows(db, "SELECT count(*) FROM predictions")[0][0] >= n // 4:
                break
        except Exception:  # noqa: BLE001 - not created yet
            pass
        time.sleep(0.1)
    else:
        pytest.fail("a quarter of the documents was not written within 120 s")
    killed = _run(db).run_id
    proc.kill()
    proc.communicate(timeout=30)
    partial = sqlite_rows(db, "SELECT count(*) FROM predictions")[0][0]
    assert 0 < partial < n
    again = run_cli(*args)
    assert again.rc == 0, again.err
    assert sqlite_rows(db, "SELECT count(*), count(DISTINCT doc_id) FROM predictions") == [
        (n, n)]
    conn = connect(f"sqlite:///{db}")
    first, last = run_records.get(conn, killed), run_records.latest(conn, 1)[0]
    conn.close()
    assert first is not None and (first.status, first.error) == ("failed", "abandoned")
    assert last.status == "succeeded" and last.counts["total"]["written"] == n  # type: ignore[index]
    assert workers_left() == []


def test_a_stop_signal_whose_exception_was_swallowed_still_stops_at_the_next_wave() -> None:
    """Python ignores an exception raised in a garbage collector's callback: a stop
    signal's ``Interrupted`` raised there is lost, but the signal is remembered and the
    run stops at its next wave's start (or after its last)."""
    from pipelines.orchestration import score, signals

    with signals.interruptible():
        score._stop_if_signalled()  # nothing received: goes on
        signals._received.append(signal.SIGTERM)
        with pytest.raises(signals.Interrupted) as stop:
            score._stop_if_signalled()
    assert stop.value.name == "SIGTERM"
