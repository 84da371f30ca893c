"""``beamscore runs``, ``beamscore triggers`` and the usage rules every command follows,
through the CLI, on runs recorded directly in a SQLite database (no pipeline runs)."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.cli import main
from store import monitoring, run_records
from store.database import Database, connect
from store.ledger import Holder, TrancheLedger
from tests.pipelines.helpers import run_cli

REPO = Path(__file__).resolve().parents[2]
DAY = "2026-03-01"
GONE = Holder(Holder.this_process().host, 2 ** 22 + 12345)  # above pid_max: never alive


def _db(path: Path) -> Database:
    db = connect(f"sqlite:///{path}")
    db.init_schema()
    return db


def _running(path: Path, run_id: str, holder: Holder, lease_seconds: float | None = 3600,
             tranche: str = DAY) -> None:
    """A run recorded running by ``holder``, holding ``tranche``'s lease for
    ``lease_seconds`` (none if None; a negative lease has expired)."""
    db = _db(path)
    run_records.start(db, run_id, {"workers": 1}, "demo:1", holder=holder)
    if lease_seconds is not None:
        taken, _ = TrancheLedger(db, holder=holder).acquire(
            tranche, "demo", "1", "fp", [], run_id, lease_seconds)
        assert taken
    db.close()


def _finished(path: Path, run_id: str, counts: dict[str, object], output_dir: str = "") -> None:
    db = _db(path)
    run_records.start(db, run_id, {"workers": 1, "output_dir": output_dir}, "demo:1")
    run_records.finish(db, run_id, "succeeded", counts)
    db.close()


def _counts(tranches: int = 1) -> dict[str, object]:
    c = {"read": 10, "valid": 9, "scored": 9, "dead_lettered": 1, "written": 9}
    days = [_day(i) for i in range(tranches)]
    return {"status": "succeeded", "tranches": {d: c for d in days},
            "total": {"read": 10 * tranches, "written": 9 * tranches,
                      "dead_lettered": tranches},
            "plan": {DAY: {"decision": "would run", "detail": "never scored"}}}


def _day(i: int) -> str:
    """A distinct tranche name for each i."""
    return (dt.date(2000, 1, 1) + dt.timedelta(days=i)).isoformat()


def _status_of(listing: str, run_id: str) -> str:
    [line] = [x for x in listing.splitlines() if x.startswith(run_id)]
    return line.split()[1]


# ------------------------------------------------------------------ usage
@pytest.mark.parametrize("command", ["score", "plan"])
def test_to_before_from_is_a_usage_error_naming_both(
        command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([command, "--from", "2026-01-03", "--to", "2026-01-01",
              "--db", f"sqlite:///{tmp_path / 's.db'}", "--input-root", str(tmp_path)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--to 2026-01-01 is before --from 2026-01-03" in err


@pytest.mark.parametrize("dates", [["--from", "2026-01-01"], ["--to", "2026-01-01"],
                                   ["--date", "2026-01-01", "--to", "2026-01-02"]])
def test_half_a_range_is_a_usage_error(dates: list[str], tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["score", *dates, "--db", f"sqlite:///{tmp_path / 's.db'}"])
    assert exc.value.code == 2
    assert "--from and --to go together" in capsys.readouterr().err
    assert not (tmp_path / "s.db").exists()


def test_a_closed_pipe_ends_the_output_quietly(tmp_path: Path) -> None:
    """``beamscore runs show RUN_ID | head -1``: the reader goes after one line, the
    rest of a long output (well over a pipe's 64 KiB) is dropped, exit 0, no message."""
    path = tmp_path / "s.db"
    _finished(path, "run-long", _counts(tranches=1500))
    for args in (["runs", "show", "run-long"], ["runs", "list", "--limit", "5"]):
        proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", *args, "--db",
                                 f"sqlite:///{path}"], cwd=REPO, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        assert proc.stdout is not None and proc.stderr is not None
        first = proc.stdout.readline()
        proc.stdout.close()
        err = proc.stderr.read().decode()
        assert proc.wait(timeout=60) == 0, err
        assert first and err == ""


# ------------------------------------------------------------------ runs list / show
def test_runs_list_shows_a_run_whose_process_or_lease_is_gone_abandoned(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    _running(path, "run-killed", GONE)                       # SIGKILLed: process gone
    _running(path, "run-no-lease", GONE, lease_seconds=None)  # killed before taking one
    listed = run_cli("runs", "list", "--db", f"sqlite:///{path}")
    assert listed.rc == 0, listed.err
    assert _status_of(listed.out, "run-killed") == "abandoned"
    assert _status_of(listed.out, "run-no-lease") == "abandoned"
    shown = run_cli("runs", "show", "run-killed", "--db", f"sqlite:///{path}")
    assert shown.rc == 0, shown.err
    assert "status    abandoned (recorded running)" in shown.out
    assert f"process {GONE.pid} on this host is gone" in shown.out
    # plan takes the tranche over for the same reason
    db = _db(path)
    decision, detail = TrancheLedger(db).decide(DAY, "demo", "1", "fp", force=False)
    db.close()
    assert decision == "would run" and "abandoned" in detail


def test_runs_list_judges_leases_as_plan_does(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    elsewhere = Holder("another-host", 4242)
    _running(path, "run-live", Holder.this_process())                # this process: alive
    _running(path, "run-remote", elsewhere, tranche="2026-03-02")   # renewing, elsewhere
    _running(path, "run-stale", elsewhere, -1, tranche="2026-03-03")  # stopped renewing
    listed = run_cli("runs", "list", "--db", f"sqlite:///{path}")
    assert _status_of(listed.out, "run-live") == "running"
    assert _status_of(listed.out, "run-remote") == "running"
    assert _status_of(listed.out, "run-stale") == "abandoned"
    shown = run_cli("runs", "show", "run-stale", "--db", f"sqlite:///{path}")
    assert "its lease expired" in shown.out and "exit code none: the run is abandoned" in \
        shown.out


def test_a_run_elsewhere_that_never_took_a_lease_is_abandoned_after_a_lease(
        tmp_path: Path) -> None:
    """Killed on another host between recording its start and taking its leases: it
    is running for a lease's length (a live run takes them in its first seconds), then
    abandoned, saying why."""
    path = tmp_path / "s.db"
    elsewhere = Holder("another-host", 4242)
    _running(path, "run-new", elsewhere, lease_seconds=None)
    _running(path, "run-old", elsewhere, lease_seconds=None)
    db = _db(path)
    old = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=121)).isoformat()
    db.execute("UPDATE runs SET started_at = ? WHERE run_id = 'run-old'", [old])
    db.close()
    listed = run_cli("runs", "list", "--db", f"sqlite:///{path}")
    assert listed.rc == 0, listed.err
    assert _status_of(listed.out, "run-new") == "running"
    assert _status_of(listed.out, "run-old") == "abandoned"
    shown = run_cli("runs", "show", "run-old", "--db", f"sqlite:///{path}")
    assert f"it holds no tranche lease and started at {old}, more than " \
           "sink.lease_seconds (120 s) ago" in shown.out, shown.out


def test_runs_show_gives_exit_code_alerts_retraining_and_report(tmp_path: Path) -> None:
    path, out = tmp_path / "s.db", tmp_path / "out"
    report = out / "_reports" / "run-6.html"
    report.parent.mkdir(parents=True)
    report.write_text("<html></html>")
    _finished(path, "run-6", _counts(), output_dir=str(out))
    db = _db(path)
    monitoring.write_rows(db, [
        {"run_id": "run-6", "tranche": DAY, "model_name": "demo", "model_version": "1",
         "metric": metric, "slice": "", "value": value, "n": 500, "ci_low": None,
         "ci_high": None, "threshold": 0.2, "status": status}
        for metric, value, status in (("class_psi", 0.31, "alert"), ("score_ks", 0.1, "ok"))])
    trigger = monitoring.add_trigger(db, "demo", "1", ["class_psi alert in 3 runs in a row"],
                                     ["run-6", "run-5", "run-4"], "make retrain")
    monitoring.finish_trigger(db, trigger.trigger_id, "command_failed", 2)
    db.close()
    shown = run_cli("runs", "show", "run-6", "--db", f"sqlite:///{path}")
    assert shown.rc == 0, shown.err
    lines = shown.out.splitlines()
    assert "status    succeeded" in lines
    assert "exit code not recorded (a job staged for a template launcher, or its launcher " \
        "stopped)" in lines
    assert f"tranche {_day(0)}: read 10, valid 9, scored 9, dead-lettered 1, written 9" in lines
    assert "alerts    1:" in lines and f"  {DAY}  class_psi 0.31 (threshold 0.2)" in lines
    assert (f"retraining requested: trigger {trigger.trigger_id}, command_failed; command "
            "exit code 2") in lines
    assert f"report    {report}" in lines
    assert "config:" not in shown.out
    with_config = run_cli("runs", "show", "run-6", "--show-config", "--db", f"sqlite:///{path}")
    config = json.loads(with_config.out[with_config.out.index("config:\n") + len("config:\n"):])
    assert config == {"workers": 1, "output_dir": str(out)}


def test_runs_show_of_a_quiet_run_says_so(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    counts = _counts()
    counts["exit_code"] = 0
    _finished(path, "run-0", counts, output_dir=str(tmp_path / "out"))
    shown = run_cli("runs", "show", "run-0", "--db", f"sqlite:///{path}")
    lines = shown.out.splitlines()
    assert "exit code 0" in lines and "alerts    none" in lines
    assert "retraining not requested by this run" in lines
    assert f"report    {tmp_path / 'out' / '_reports' / 'run-0.html'} (not written)" in lines


# ------------------------------------------------------------------ triggers
def test_triggers_list_shows_the_retrain_triggers_table(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    db = _db(path)
    first = monitoring.add_trigger(db, "demo", "1", ["accuracy 0.61 on 2026-03-01"],
                                   ["run-a"], "")
    second = monitoring.add_trigger(db, "tickets", "3", ["score_ks alert in 2 runs in a row"],
                                    ["run-c", "run-b"], "make retrain")
    monitoring.finish_trigger(db, second.trigger_id, "command_succeeded", 0)
    db.close()
    url = f"sqlite:///{path}"
    every = run_cli("triggers", "list", "--db", url)
    assert every.rc == 0, every.err
    rows = [line.split() for line in every.out.splitlines()[1:] if not line.startswith(" ")]
    assert [(r[0], r[2], r[3]) for r in rows] == [
        (first.trigger_id, "demo:1", "requested"),
        (second.trigger_id, "tickets:3", "command_succeeded")]
    assert rows[1][4] == "0" and "score_ks alert in 2 runs in a row" in every.out
    assert "runs run-c, run-b" in every.out
    one = run_cli("triggers", "list", "--model", "tickets", "--db", url)
    assert second.trigger_id in one.out and first.trigger_id not in one.out
    empty = run_cli("triggers", "list", "--db", f"sqlite:///{tmp_path / 'none.db'}")
    assert empty.rc == 0 and len(empty.out.splitlines()) == 1
