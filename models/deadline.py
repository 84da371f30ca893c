"""A call with a time limit that really stops it: run in a forked child, killed on time.

``call_with_deadline(fn, seconds)`` forks the calling process (the child shares the
loaded model copy-on-write, so nothing is loaded again), runs ``fn`` there and sends
its pickled result back through a pipe. If the result is not complete within
``seconds``, the child is killed with SIGKILL and reaped: no thread keeps running and
no process is left behind. The child never returns into the caller's code: it leaves
with ``os._exit``, so it runs no atexit handlers and flushes none of the caller's
buffers.
"""

from __future__ import annotations

import os
import pickle
import select
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Outcome:
    """``ok`` with ``value``; ``error`` (``fn`` raised), ``died`` (the child ended
    without a result) or ``timeout``, with ``message``."""

    status: str
    value: Any = None
    message: str = ""


def call_with_deadline(fn: Callable[[], Any], seconds: float) -> Outcome:
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.close(read_fd)
        _child(fn, write_fd)
    os.close(write_fd)
    try:
        data = _read_until(read_fd, time.monotonic() + seconds)
    finally:
        os.close(read_fd)
    if data is None:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        return Outcome("timeout", message=f"took longer than {seconds:.3g} s")
    _, status = os.waitpid(pid, 0)
    if not data:
        return Outcome("died", message=f"the scoring process died "
                                       f"(exit status {os.waitstatus_to_exitcode(status)})")
    outcome: Outcome = pickle.loads(data)
    return outcome


def _child(fn: Callable[[], Any], write_fd: int) -> None:
    code = 0
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)
        try:
            outcome = Outcome("ok", fn())
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            outcome = Outcome("error", message=f"{type(exc).__name__}: {exc}"[:500])
        payload = pickle.dumps(outcome, protocol=pickle.HIGHEST_PROTOCOL)
        view = memoryview(payload)
        while view:
            view = view[os.write(write_fd, view):]
    except BaseException:  # noqa: BLE001 - the parent sees a short read
        code = 1
    finally:
        os._exit(code)


def _read_until(fd: int, deadline: float) -> bytes | None:
    """Everything written to ``fd`` until EOF, or None at the deadline."""
    chunks: list[bytes] = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return None
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
