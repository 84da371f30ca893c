"""SIGINT and SIGTERM during a run: an exception the launcher can clean up after.

Inside ``interruptible()`` the first SIGINT or SIGTERM raises ``Interrupted`` in the
main thread (later ones are ignored while the launcher marks the run failed, frees its
leases and stops its workers); the exit code is 128 + the signal number (130, 143).
Code running in the main thread may wrap the exception (Beam's in-process worker turns
it into a RuntimeError), so ``received()`` tells whether a signal arrived. Where
Python cannot raise at all (a weak reference's callback or a finalizer running when the
signal comes: it prints and drops the exception), the stop is raised again at the main
thread's next instruction outside such code, so that a run stops as promptly there.

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
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

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
# A stop whose ``Interrupted`` Python ignored (raised in a callback): raised again.
_again: list[int] = []
_hooking: list[bool] = []  # the unraisable hook is running
_AGAIN_SECONDS = 0.01


def received() -> Interrupted | None:
    """The interruption of the current ``interruptible()`` block, if a signal arrived."""
    return Interrupted(_received[-1]) if _received else None


def _handler(signum: int, _frame: FrameType | None) -> None:
    """The one handler of an ``interruptible()`` block: in a ``deferred()`` block it
    notes the stop and passes it on; otherwise the first stop raises ``Interrupted``
    and later ones are ignored while the launcher cleans up, except a stop raised
    where Python ignored its exception (``_unraisable_hook``), which is raised again."""
    if _deferring:
        commands, noted = _deferring[-1]
        noted.append(signum)
        _received.append(signum)
        for proc in commands:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signum)
        return
    if _again:
        if _hooking:  # within the hook: its thread runs this again in a moment
            return
        raise Interrupted(_again.pop())
    if _received:
        return
    _received.append(signum)
    raise Interrupted(signum)


def _unraisable_hook(previous: Callable[[Any], None]) -> Callable[[Any], None]:
    """A ``sys.unraisablehook``: an ``Interrupted`` the handler raised where Python
    cannot raise (a weak reference's callback, a finalizer: it is printed and dropped)
    is raised again in the main thread, at its next instruction outside such code."""

    def hook(info: Any) -> None:
        if not isinstance(info.exc_value, Interrupted) or not _active:
            previous(info)
            return
        _hooking.append(True)
        try:
            _again.append(info.exc_value.signum)
            _raise_later(info.exc_value.signum)
        finally:
            _hooking.pop()

    return hook


def _raise_later(signum: int) -> None:
    """Run ``_handler`` again in the main thread, from another thread in a moment (in
    the hook's thread, it would run within the hook, which cannot raise either)."""

    def trip() -> None:
        time.sleep(_AGAIN_SECONDS)
        if _again and _active:  # not raised meanwhile, and the block's handler still set
            signal.pthread_kill(threading.main_thread().ident or 0, signum)  # wakes a wait

    threading.Thread(target=trip, name="beamscore-stop", daemon=True).start()


@contextmanager
def interruptible() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _handler) for sig in SIGNALS}
    previous_hook = sys.unraisablehook
    sys.unraisablehook = _unraisable_hook(previous_hook)
    _received.clear()
    _again.clear()
    _active.append(True)
    try:
        yield
    finally:
        _active.pop()
        sys.unraisablehook = previous_hook
        for sig, old in previous.items():
            signal.signal(sig, old)
        _received.clear()
        _again.clear()


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
    if _received:
        raise Interrupted(_received[-1])
    commands: list[subprocess.Popen[bytes]] = []
    noted: list[int] = []
    _deferring.append((commands, noted))
    try:
        yield
    finally:
        _deferring.pop()
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
