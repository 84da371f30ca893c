"""SIGINT and SIGTERM during a run: an exception the launcher can clean up after.

Inside ``interruptible()`` the first SIGINT or SIGTERM raises ``Interrupted`` in the
main thread (later ones are ignored while the launcher marks the run failed, frees its
leases and stops its workers); the exit code is 128 + the signal number (130, 143).
Code running in the main thread may wrap the exception (Beam's in-process worker turns
it into a RuntimeError), so ``received()`` tells whether a signal arrived.
"""

from __future__ import annotations

import signal
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
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
        _received.clear()
