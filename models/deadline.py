"""A call with a time limit that really stops it: run in a forked child, killed on time.

``call_with_deadline(fn, seconds)`` forks the calling process (the child shares the
loaded model copy-on-write, so nothing is loaded again), runs ``fn`` there and sends
its pickled result back through a pipe, its length first: the result is complete when
that many bytes have come, whoever else holds the pipe open. The child leads a process
group of its own, and once the call is over (a result, a timeout, a death) that whole
group is killed with SIGKILL and the child reaped: whatever the call started (a
process pool, a helper) goes with it, no thread keeps running and no process is left
behind. A child that closes its pipe without a result is waited for until the
deadline, then killed as a timeout. With ``seconds=None`` there is no deadline: the call is only
kept apart, so that a crash of the code it runs (a segfault in a native library) ends
the child, reported as ``died`` with the signal's name, not the caller. The child
never returns into the caller's code: it leaves with ``os._exit``, so it runs no
atexit handlers and flushes none of the caller's buffers.

Calls from several threads at once (Beam's SDK harness runs bundles on threads: on
Dataflow, ``number_of_worker_harness_threads`` of them per process) stay apart:

- one thread at a time forks, from creating its pipe to closing the pipe's write end in
  the parent (``_FORKING``). A child forked by another thread in between would inherit
  that write end and hold the pipe open, so the call would see no end of its result
  until that other child exits: a call that returned at once reported as a timeout;
- the child closes every file descriptor but the standard streams and its pipe's write
  end as it starts, so it holds none of the caller's files (a lock the caller releases
  by closing its file, a connection), and it is killed when the process that forked it
  dies (``PR_SET_PDEATHSIG``), so a crashed worker leaves no call running;
- the parent waits for the result with ``poll``, which takes descriptors of any number
  (``select`` takes none above 1023).
"""

from __future__ import annotations

import ctypes
import os
import pickle
import select
import signal
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_FORKING = threading.Lock()  # held from a call's pipe to its parent's close of the write end
_LENGTH = struct.Struct("<Q")  # the length of a result, before it
_PR_SET_PDEATHSIG = 1
try:
    _LIBC: ctypes.CDLL | None = ctypes.CDLL(None, use_errno=True)
except OSError:  # no C library to look prctl up in
    _LIBC = None


@dataclass(frozen=True)
class Outcome:
    """``ok`` with ``value``; ``error`` (``fn`` raised), ``died`` (the child ended
    without a result; ``ended``: how, ``ended_by``'s words) or ``timeout``, with
    ``message``."""

    status: str
    value: Any = None
    message: str = ""
    ended: str = ""


def call_with_deadline(fn: Callable[[], Any], seconds: float | None) -> Outcome:
    with _FORKING:
        read_fd, write_fd = os.pipe()
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # the child
            _child(fn, write_fd, parent)
        os.close(write_fd)
    deadline = None if seconds is None else time.monotonic() + seconds
    timeout = Outcome("timeout", message=f"took longer than {seconds or 0:.3g} s")
    try:
        data = _read_result(read_fd, deadline)
        if data is None:
            return timeout
        if data:
            outcome: Outcome = pickle.loads(data)
            return outcome
        status = _exit_status(pid, deadline)  # the pipe closed without a result
        if status is None:
            return timeout
        how = ended_by(status)
        return Outcome("died", message=f"the scoring process died ({how})", ended=how)
    finally:  # a result, a timeout, a death or a signal's exception while waiting
        os.close(read_fd)
        _end_group(pid)


def _exit_status(pid: int, deadline: float | None) -> int | None:
    """The wait status of the child ``pid`` once it has ended, left unreaped (so its
    process group stays its own until ``_end_group``); None if it runs past
    ``deadline``."""
    pause = 0.001
    while True:
        found = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        if found is not None:
            return _wait_status(found)
        if deadline is not None and time.monotonic() >= deadline:
            return None
        time.sleep(pause)
        pause = min(0.05, pause * 2)


def _wait_status(info: Any) -> int:
    """A ``waitid`` result as the wait status ``os.waitpid`` would give."""
    if info.si_code == os.CLD_EXITED:
        return (info.si_status & 0xFF) << 8
    return info.si_status & 0x7F  # killed or dumped by a signal


def _end_group(pid: int) -> None:
    """SIGKILL to the child's process group (it, and whatever it started), then reap
    the child. The child is not reaped before the kill, so its id, the group's, cannot
    have been given to another process."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):  # the group has no process left
        pass
    os.waitpid(pid, 0)


def ended_by(status: int) -> str:
    """How a process with wait status ``status`` ended: ``signal SIGSEGV, a crash``,
    ``signal SIGKILL, killed (e.g. by the out-of-memory killer)``, ``exit status 3``."""
    code = os.waitstatus_to_exitcode(status)
    return f"exit status {code}" if code >= 0 else signal_words(-code)


CRASH_SIGNALS = frozenset({signal.SIGSEGV, signal.SIGBUS, signal.SIGABRT, signal.SIGILL,
                           signal.SIGFPE})


def signal_words(number: int) -> str:
    """``signal SIGSEGV, a crash`` for a signal that native code raises on itself,
    ``signal SIGKILL, killed (e.g. by the out-of-memory killer)``, else its name."""
    try:
        sig = signal.Signals(number)
    except ValueError:
        return f"signal {number}"
    if sig in CRASH_SIGNALS:
        return f"signal {sig.name}, a crash"
    if sig == signal.SIGKILL:
        return "signal SIGKILL, killed (e.g. by the out-of-memory killer)"
    return f"signal {sig.name}"


def _child(fn: Callable[[], Any], write_fd: int, parent: int) -> None:
    code = 0
    try:
        os.setsid()  # a process group of its own: killed whole when the call is over
        os.closerange(3, write_fd)  # every descriptor from 3 up but the pipe's write end
        os.closerange(max(3, write_fd + 1), os.sysconf("SC_OPEN_MAX"))
        _die_with(parent)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)
        try:
            outcome = Outcome("ok", fn())
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            outcome = Outcome("error", message=f"{type(exc).__name__}: {exc}"[:500])
        payload = pickle.dumps(outcome, protocol=pickle.HIGHEST_PROTOCOL)
        view = memoryview(_LENGTH.pack(len(payload)) + payload)
        while view:
            view = view[os.write(write_fd, view):]
    except BaseException:  # noqa: BLE001 - the parent sees a short read
        code = 1
    finally:
        os._exit(code)


def _die_with(parent: int) -> None:
    """Have the kernel kill this process when the thread that forked it ends (Linux;
    elsewhere nothing): that thread waits in ``call_with_deadline`` until the child is
    done, so only when its process dies. Exit at once if that happened already."""
    prctl = getattr(_LIBC, "prctl", None)
    if prctl is not None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)


def _read_result(fd: int, deadline: float | None) -> bytes | None:
    """The result the child writes to ``fd`` (its length, then its bytes); b"" if the
    pipe closes before it is whole; None at the deadline (None: none)."""
    chunks: list[bytes] = []
    have, want = 0, None
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    while want is None or have < want:
        if deadline is None:
            poller.poll()
        else:
            left = deadline - time.monotonic()
            if left <= 0 or not poller.poll(left * 1000):
                return None
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            return b""
        chunks.append(chunk)
        have += len(chunk)
        if want is None and have >= _LENGTH.size:
            head = b"".join(chunks)
            want = _LENGTH.size + _LENGTH.unpack_from(head)[0]
            chunks = [head]
    return b"".join(chunks)[_LENGTH.size:want]
