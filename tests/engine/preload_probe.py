"""Callables a test's fork server preloads: what they leave in the zygote's memory is
what its workers should find there."""

from __future__ import annotations

import os

MADE: list[tuple[str, int]] = []  # (what, the pid of the process that made it)


def make(what: str) -> None:
    MADE.append((what, os.getpid()))


def fail() -> None:
    raise SystemExit("a preload that exits")
