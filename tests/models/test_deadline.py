"""A call in a forked child with a time limit: its value, its error, its death, its kill;
calls from several threads at once; what the child holds of its caller."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from models.deadline import Outcome, call_with_deadline

ROOT = Path(__file__).resolve().parents[2]


def _children() -> set[int]:
    """This process's live (or unreaped) children."""
    found = set()
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        text = (task / "children").read_text().split()
        found.update(int(pid) for pid in text)
    return found


def test_the_value_comes_back_whole_even_when_large() -> None:
    big = np.arange(3_000_000, dtype=np.float64)  # 24 MB through the pipe
    outcome = call_with_deadline(lambda: big * 2, 30)
    assert outcome.status == "ok" and np.array_equal(outcome.value, big * 2)


def test_an_exception_is_reported_with_its_type_and_message() -> None:
    def fail() -> None:
        raise ValueError("bad batch")

    outcome = call_with_deadline(fail, 30)
    assert (outcome.status, outcome.message) == ("error", "ValueError: bad batch")


def test_a_child_that_dies_is_an_error_naming_its_exit_status() -> None:
    outcome = call_with_deadline(lambda: os._exit(3), 30)
    assert outcome.status == "died" and "died (exit status 3)" in outcome.message


def test_a_child_a_signal_ends_is_named_by_the_signal_and_a_crash_said_to_be_one() -> None:
    import signal

    outcome = call_with_deadline(lambda: os.kill(os.getpid(), signal.SIGSEGV), None)
    assert outcome.status == "died" and outcome.ended == "signal SIGSEGV, a crash"
    assert outcome.message == "the scoring process died (signal SIGSEGV, a crash)"
    outcome = call_with_deadline(lambda: os.kill(os.getpid(), signal.SIGKILL), 30)
    assert outcome.ended == "signal SIGKILL, killed (e.g. by the out-of-memory killer)"


def test_without_a_deadline_the_call_is_waited_for_whatever_it_takes() -> None:
    outcome = call_with_deadline(lambda: time.sleep(0.3) or 7, None)
    assert (outcome.status, outcome.value) == ("ok", 7)


def test_a_call_over_its_limit_is_killed_and_reaped() -> None:
    before = _children()
    started = time.monotonic()
    outcome = call_with_deadline(lambda: time.sleep(3600), 0.3)
    elapsed = time.monotonic() - started
    assert outcome.status == "timeout" and "0.3 s" in outcome.message
    assert elapsed < 5
    assert _children() == before  # killed and reaped: no process left behind


def _start_helper(pid_file: Path) -> None:
    """What a library starting a helper process does: a child of the call's process,
    holding the call's pipe open, living on after the call has returned."""
    helper = os.fork()
    if helper == 0:
        time.sleep(60)
        os._exit(0)
    pid_file.write_text(str(helper))


def test_what_a_call_started_ends_with_it_and_does_not_hold_its_result_back(
        tmp_path: Path) -> None:
    """A helper the call left running holds the result's pipe open: the result is
    whole by its length, not by the pipe's end, and the helper is killed with the call's
    process group."""
    pid_file = tmp_path / "helper"
    started = time.monotonic()
    outcome = call_with_deadline(lambda: _start_helper(pid_file) or 42, 30)
    assert (outcome.status, outcome.value) == ("ok", 42)
    assert time.monotonic() - started < 5
    helper = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while _alive(helper) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _alive(helper)


def test_a_call_that_closes_its_pipe_and_hangs_is_a_timeout_at_its_deadline() -> None:
    """No result and no end: waited for until the deadline, not past it, then killed."""
    def close_then_hang() -> None:
        os.closerange(3, 1024)
        time.sleep(3600)

    before = _children()
    started = time.monotonic()
    outcome = call_with_deadline(close_then_hang, 0.5)
    assert outcome.status == "timeout" and time.monotonic() - started < 5
    assert _children() == before
    outcome = call_with_deadline(lambda: os.closerange(3, 1024) or os._exit(4), 30)
    assert outcome.status == "died" and "exit status 4" in outcome.message


def test_calls_from_threads_at_once_end_when_their_own_child_does(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A slow call and a quick one from two threads: the quick one's child must not be
    waited for past its own end. Creating a pipe is slowed down here so that the other
    thread is ready to fork while a call's pipe is open: a child forked then would
    inherit that pipe's write end and, holding it, keep the quick call from seeing its
    result end until the slow call's 1.5 s are over."""
    pipe = os.pipe

    def slow_pipe() -> tuple[int, int]:
        fds = pipe()
        time.sleep(0.05)  # the other thread runs meanwhile
        return fds

    monkeypatch.setattr(os, "pipe", slow_pipe)
    outcomes: dict[str, Any] = {}

    def slow() -> None:
        outcomes["slow"] = call_with_deadline(lambda: time.sleep(1.5) or "slow", 10)

    def quick() -> None:
        time.sleep(0.02)  # after the slow call made its pipe, before it forked
        outcomes["quick"] = call_with_deadline(lambda: "quick", 0.8)

    threads = [threading.Thread(target=slow), threading.Thread(target=quick)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes["quick"] == Outcome("ok", "quick"), outcomes["quick"]
    assert outcomes["slow"] == Outcome("ok", "slow")


def test_the_child_holds_none_of_the_callers_files(tmp_path: Path) -> None:
    """A lock the caller holds on an open file, and the file itself, are not the
    child's: the caller's close releases the lock while the child runs."""
    with open(tmp_path / "held", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)

        def open_in_child() -> bool:
            try:
                os.fstat(held.fileno())
            except OSError:
                return False
            return True

        assert call_with_deadline(open_in_child, 30) == Outcome("ok", False)


def test_a_result_comes_back_on_a_descriptor_above_1023() -> None:
    """``select`` takes no descriptor above 1023; a worker with many files open gets its
    pipe there."""
    spare = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        assert call_with_deadline(lambda: 42, 30) == Outcome("ok", 42)
    finally:
        for fd in spare:
            os.close(fd)


def test_a_child_dies_with_the_process_that_forked_it(tmp_path: Path) -> None:
    """The caller killed mid-call (SIGKILL: nothing of it runs after) leaves no child."""
    pid_file = tmp_path / "child.pid"
    script = (
        "import os, sys, time\n"
        "from models.deadline import call_with_deadline\n"
        f"def hang():\n    open({str(pid_file)!r}, 'w').write(str(os.getpid()))\n"
        "    time.sleep(120)\n"
        "call_with_deadline(hang, 300)\n")
    caller = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT)
    try:
        deadline = time.monotonic() + 30
        while not pid_file.exists() or not pid_file.read_text():
            assert time.monotonic() < deadline, "the child never started"
            time.sleep(0.05)
        child = int(pid_file.read_text())
        caller.kill()
        caller.wait()
        deadline = time.monotonic() + 10
        while _alive(child):
            assert time.monotonic() < deadline, f"child {child} outlived its caller"
            time.sleep(0.05)
    finally:
        caller.kill()
        caller.wait()


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, whose parent is gone, does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
