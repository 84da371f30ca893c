"""The retraining command's guard: the command's outcome passes through it unchanged, a
stop reaches the command's whole process group, and a launcher that ends without
waiting (a SIGKILL) takes the command with it, the guard recording the trigger."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipelines.configuration.connection import opened
from pipelines.orchestration.command_guard import run_guarded
from store import monitoring
from store.session import DatabaseSettings
from tests.processes import parent, running

REPO = Path(__file__).resolve().parents[2]


def _trigger(url: str) -> tuple[DatabaseSettings, str]:
    database = DatabaseSettings(url)
    with opened(database, migrate=True) as db:
        trigger = monitoring.add_trigger(db, "m", "1", ["a reason"], ["run"], "a command")
    return database, trigger.trigger_id


def _status(database: DatabaseSettings, trigger_id: str) -> tuple[str, int | None]:
    with opened(database) as db:
        [found] = [t for t in monitoring.triggers(db, "m") if t.trigger_id == trigger_id]
    return found.status, found.command_exit_code


@pytest.mark.parametrize("command, code", [
    ("true", 0), ("exit 3", 3), ("kill -TERM $$", -signal.SIGTERM),
    ("kill -KILL $$", -signal.SIGKILL),
])
def test_the_commands_outcome_passes_through_the_guard(tmp_path: Path, command: str,
                                                       code: int) -> None:
    database, trigger_id = _trigger(f"sqlite:///{tmp_path / 's.db'}")
    assert run_guarded(command, database, trigger_id) == code
    assert _status(database, trigger_id) == ("requested", None)  # the launcher records it


def test_a_stop_passed_to_the_guard_reaches_the_commands_process_group(tmp_path: Path) -> None:
    """What ``signals.forward_stops`` sends (the guard's group) ends the command and
    what it started; the guard ends as the command did."""
    database, trigger_id = _trigger(f"sqlite:///{tmp_path / 's.db'}")
    pids = tmp_path / "pids"
    launcher = subprocess.Popen(
        [sys.executable, "-c", "import sys; from pipelines.orchestration.command_guard "
         "import run_guarded; from store.session import DatabaseSettings; "
         f"sys.exit(-run_guarded(sys.argv[1], DatabaseSettings({database.url!r}), "
         f"{trigger_id!r}))",
         f"sleep 60 & echo $! > {pids}.tmp; mv {pids}.tmp {pids}; wait"], cwd=REPO)
    sleeper = _wait_for_pid(pids, launcher)
    guard = _child_of(launcher.pid)
    os.killpg(guard, signal.SIGTERM)
    assert launcher.wait(timeout=30) == signal.SIGTERM  # the guard died of SIGTERM
    assert not running(sleeper)


def test_a_launcher_killed_with_its_command_running_takes_the_command_with_it(
        tmp_path: Path, db_url: str) -> None:
    """The guard sees the launcher's end (its pipe closes), sends SIGTERM to the
    command's process group, SIGKILL after the grace (this command ignores SIGTERM, and
    so does what it started), and records the trigger, which nobody else can now do."""
    database, trigger_id = _trigger(db_url)
    pids = tmp_path / "pids"
    launcher = subprocess.Popen(
        [sys.executable, "-c", "import sys; from pipelines.orchestration.command_guard "
         "import run_guarded; from store.session import DatabaseSettings; "
         f"run_guarded(sys.argv[1], DatabaseSettings({database.url!r}), {trigger_id!r}, "
         "grace=0.5)",
         f"trap '' TERM; sleep 60 & echo $! > {pids}.tmp; mv {pids}.tmp {pids}; wait"],
        cwd=REPO)
    sleeper = _wait_for_pid(pids, launcher)
    launcher.kill()
    launcher.wait(timeout=30)
    deadline = time.monotonic() + 30
    while _status(database, trigger_id)[0] == "requested" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _status(database, trigger_id) == ("command_failed", -signal.SIGKILL)
    assert not running(sleeper)


def _wait_for_pid(path: Path, launcher: subprocess.Popen[bytes]) -> int:
    deadline = time.monotonic() + 30
    while not path.exists():
        assert launcher.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    return int(path.read_text())


def _child_of(pid: int) -> int:
    [child] = [int(p) for p in os.listdir("/proc") if p.isdigit() and _parent_or_none(p) == pid]
    return child


def _parent_or_none(pid: str) -> int | None:
    try:
        return parent(int(pid))
    except FileNotFoundError:
        return None
