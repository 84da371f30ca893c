"""Imported by a test's fork server as a preload module: remembers, in each worker the
zygote forks, the modules it was forked with, and gives a pipeline step the modules the
worker has imported since."""

from __future__ import annotations

import os
import sys

_AT_FORK: set[str] = set()


def _remember() -> None:
    _AT_FORK.update(sys.modules)


def imported_since_fork(_: object) -> tuple[int, list[str]]:
    """(this worker's pid, the modules it imported after the zygote forked it)."""
    return os.getpid(), sorted(set(sys.modules) - _AT_FORK)


os.register_at_fork(after_in_child=_remember)
