"""SIGINT and SIGTERM during a run: an exception the launcher can clean up after.

Inside ``interruptible()`` the first SIGINT or SIGTERM raises ``Interrupted`` in the
main thread (later ones are ignored while the launcher marks the run failed, frees its
leases and stops its workers); the exit code is 128 + the signal number (130, 143).
Code running in the main thread may wrap the exception (Beam's in-process worker turns
it into a RuntimeError), so ``received()`` tells whether a signal arrived.

``deferred()`` marks the closing steps of a run whose record is final (its tracking
figures, retraining decision and report: seconds): a stop signal there is noted and
raised as ``Interrupted`` once the block ends, so that a run stopped then still has them.
A command the block runs (``tracking.command``) is the exception: ``forward_stops(proc)``
sends it the signal at once, and the block ends when it does.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """A stop signal arrived; ``run_id`` is the run it interrupted, if one had started."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.run_id = ""
        self.recorded = False  # the run was marked failed and its leases freed
        self.ended = False  # the run had ended (recorded) before the stop came

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


_received: list[int] = []
_active: list[bool] = []  # an interruptible() block is open in the main thread
# Per open deferred() block: its commands, and the stop signals it noted.
_deferring: list[tuple[list[subprocess.Popen[bytes]], list[int]]] = []


def received() -> Interrupted | None:
    """The interruption of the current ``interruptible()`` block, if a signal arrived."""
    return Interrupted(_received[-1]) if _received else None


@contextmanager
def interruptible() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: FrameType | None) -> None:
        for sig in SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        _received.append(signum)
        raise Interrupted(signum)

    previous = {sig: signal.signal(sig, handler) for sig in SIGNALS}
    _received.clear()
    _active.append(True)
    try:
        yield
    finally:
        _active.pop()
        for sig, old in previous.items():
            signal.signal(sig, old)
        _received.clear()


@contextmanager
def deferred() -> Iterator[None]:
    """Within an ``interruptible()`` block (else as is): a stop signal is noted and
    passed on to the commands of ``forward_stops``, then raised as ``Interrupted`` when
    the block ends. Blocks nest (the outermost raises); a stop that came before the
    block is raised at once."""
    if not _active or threading.current_thread() is not threading.main_thread():
        yield
        return
    if _deferring:
        yield
        return
    commands: list[subprocess.Popen[bytes]] = []
    noted: list[int] = []

    def note(signum: int, _frame: FrameType | None) -> None:
        noted.append(signum)
        _received.append(signum)
        for proc in commands:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signum)

    if _received:
        raise Interrupted(_received[-1])
    previous = {sig: signal.signal(sig, note) for sig in SIGNALS}
    _deferring.append((commands, noted))
    try:
        yield
    finally:
        _deferring.pop()
        for sig, old in previous.items():
            signal.signal(sig, old if not noted else signal.SIG_IGN)
    if noted:
        raise Interrupted(noted[0])


@contextmanager
def forward_stops(proc: subprocess.Popen[bytes]) -> Iterator[None]:
    """Within ``deferred()``: a stop signal is sent to ``proc``'s process group (start
    it with ``start_new_session=True``) as soon as it arrives, or at once if one came
    before it started."""
    commands, noted = _deferring[-1] if _deferring else ([], [])
    commands.append(proc)
    if noted:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, noted[0])
    try:
        yield
    finally:
        commands.remove(proc)
