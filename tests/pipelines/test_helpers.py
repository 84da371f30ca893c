"""``worker_processes()`` counts the workers this test process started, also once they
are re-parented to init, and never another run's workers on the same host."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.pipelines.helpers import OWNER_ENV, worker_processes


def _sleeper(tag: str) -> list[str]:
    """A stand-in worker: its command line names the SDK worker module, and ``tag``."""
    return [sys.executable, "-c", "import time; time.sleep(60)", "sdk_worker_main", tag]


def _orphan(tag: str, env: dict[str, str]) -> int:
    """Start a stand-in worker whose parent exits at once (it is re-parented); its pid."""
    command = " ".join(shlex.quote(a) for a in _sleeper(tag))
    out = subprocess.run(["sh", "-c", f"{command} >/dev/null 2>&1 & echo $!"], env=env,
                         capture_output=True, text=True, check=True).stdout
    return int(out)


@pytest.fixture
def started() -> Iterator[list[int]]:
    """Pids of stand-in workers, killed after the test."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


def _seen(tag: str, within: float = 10.0) -> bool:
    """Whether ``worker_processes()`` lists the stand-in ``tag`` (once its exec is done)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if any(c.split()[-1] == tag for c in worker_processes()):
            return True
        time.sleep(0.05)
    return False


def test_a_child_worker_is_counted(started: list[int]) -> None:
    started.append(subprocess.Popen(_sleeper("child")).pid)
    assert _seen("child")


def test_a_worker_re_parented_after_its_launcher_exited_is_counted(
        started: list[int]) -> None:
    pid = _orphan("orphan", dict(os.environ))
    started.append(pid)
    assert Path(f"/proc/{pid}/stat").exists()
    assert _seen("orphan")


def test_another_runs_worker_is_not_counted(started: list[int]) -> None:
    pid = _orphan("other-run", {**os.environ, OWNER_ENV: "another-run"})
    started.append(pid)
    deadline = time.monotonic() + 10
    while b"other-run" not in Path(f"/proc/{pid}/cmdline").read_bytes():  # its exec is done
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert not _seen("other-run", within=0.5)
