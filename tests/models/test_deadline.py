"""A call in a forked child with a time limit: its value, its error, its death, its kill."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from models.deadline import call_with_deadline


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


def test_a_call_over_its_limit_is_killed_and_reaped() -> None:
    before = _children()
    started = time.monotonic()
    outcome = call_with_deadline(lambda: time.sleep(3600), 0.3)
    elapsed = time.monotonic() - started
    assert outcome.status == "timeout" and "0.3 s" in outcome.message
    assert elapsed < 5
    assert _children() == before  # killed and reaped: no process left behind
