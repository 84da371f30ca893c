"""Processes as /proc shows them, for tests that check what a run leaves running."""

from __future__ import annotations

from pathlib import Path


def _stat_fields(pid: int) -> list[str]:
    """The fields of ``/proc/PID/stat`` after the command name (state first)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2:].split()


def running(pid: int) -> bool:
    """Whether ``pid`` runs: a zombie (ended, not yet reaped by its parent) does not."""
    try:
        return _stat_fields(pid)[0] != "Z"
    except FileNotFoundError:
        return False


def parent(pid: int) -> int:
    """The parent of a running process (``FileNotFoundError`` once it has gone)."""
    return int(_stat_fields(pid)[1])


def children(pid: int) -> list[int]:
    """The running children of ``pid`` (every thread's)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except FileNotFoundError:  # a thread that ended meanwhile
            continue
    return found
