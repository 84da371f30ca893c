"""What a test's fork server runs in its zygote (``install``, a preload) to learn what
each worker it forks imports afterwards: the modules a worker was forked with, and, for
a pipeline step, the modules the worker has imported since. Importing it changes
nothing."""

from __future__ import annotations

import os
import sys

_AT_FORK: set[str] = set()


def _remember() -> None:
    _AT_FORK.update(sys.modules)


def install() -> None:
    """In the zygote: remember, in each child forked from now on, its modules."""
    os.register_at_fork(after_in_child=_remember)


def keyed(element: int) -> tuple[int, int]:
    return element % 2, element


def imported_since_fork(_: object) -> tuple[int, list[str]]:
    """(this worker's pid, the modules it imported after the zygote forked it)."""
    return os.getpid(), sorted(set(sys.modules) - _AT_FORK)
