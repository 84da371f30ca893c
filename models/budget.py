"""The one rule for calling a model's code on a batch: kept apart, and bounded in time.

A model's ``predict_proba``, its own vectoriser's tokenizer or preprocessor, and the
permutation importance tracking measures with it are third-party code: they may hang,
take far longer than the data is worth, or crash their process. Every such call a
worker makes for a batch goes through the batch's ``ModelCalls``:

- with a ``TimeLimit``, each call runs in a forked child killed when its limit passes
  (``models.deadline``): a call on n records may take ``n * per_record`` seconds, at
  least ``minimum``; and all of a batch's calls together may take at most
  ``BUDGET_FACTOR`` times the batch's own limit (its time budget), counted from its
  first call. A call is given no more than what is left of the budget; one that the
  budget cut short, or that would start after it was spent, is ``spent``: its records
  are dead letters of the budget, its importance is not measured. So a batch's calls
  into model code end within its budget plus the start of each call (a fork), however
  many of its records are slow;
- without one, each call runs in the worker itself (``ISOLATED_WITHOUT_LIMIT`` off: no
  fork, no overhead), unbounded: a child per batch cost the bench about 60 ms of CPU a
  batch of 4,096 (10.2 -> 13.7 CPU-s for 200,000 documents), the pages it copies of a
  worker whose heap is in huge pages (docs/models.md, "Time limit").
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from models.deadline import Outcome, call_with_deadline

BUDGET_FACTOR = 4  # a batch's calls together: at most this many times the batch's limit
SPENT = "spent"  # an Outcome's status: the batch's time budget ran out before or during it
ISOLATED_WITHOUT_LIMIT = False  # calls without a time limit run in the worker itself


@dataclass(frozen=True)
class TimeLimit:
    per_record: float  # seconds per text
    minimum: float = 0.25  # seconds for any call, whatever its size

    def for_records(self, n: int) -> float:
        return max(self.minimum, n * self.per_record)


class ModelCalls:
    """The calls into model code of one batch of ``records`` records, under ``limit``
    (None: none). ``clock`` is the budget's (monotonic seconds)."""

    def __init__(self, limit: TimeLimit | None, records: int,
                 clock: Callable[[], float] = time.monotonic):
        self.limit = limit
        self.records = records
        self._clock = clock
        self.budget = BUDGET_FACTOR * limit.for_records(records) if limit else None
        self._ends = clock() + self.budget if self.budget is not None else None

    def left(self) -> float | None:
        """Seconds left of the budget (None without a limit)."""
        return None if self._ends is None else self._ends - self._clock()

    def spent_reason(self) -> str:
        """Why a record the budget left unscored is a dead letter."""
        assert self.limit is not None and self.budget is not None
        return (f"timeout: the batch's time budget ({self.budget:.3g} s, {BUDGET_FACTOR} "
                f"times its limit of {self.limit.for_records(self.records):.3g} s) was "
                "spent before this record could be scored")

    def run(self, fn: Callable[[], Any], records: int) -> Outcome:
        """``fn()``, a call into model code on ``records`` records, under the rule."""
        if self.limit is None:
            return call_with_deadline(fn, None) if ISOLATED_WITHOUT_LIMIT else _here(fn)
        own = self.limit.for_records(records)
        left = self.left()
        assert left is not None
        if left <= 0:
            return Outcome(SPENT, message=self.spent_reason())
        seconds = min(own, left)
        outcome = call_with_deadline(fn, seconds)
        if outcome.status == "timeout" and seconds < own:
            return Outcome(SPENT, message=self.spent_reason())
        return outcome


def _here(fn: Callable[[], Any]) -> Outcome:
    """``fn()`` in this process; what it raises as an ``error`` (a ``SystemExit`` too:
    third-party code may call ``sys.exit``; a worker is stopped by its signal's default
    action, never by one)."""
    try:
        return Outcome("ok", fn())
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - reported, not fatal
        return Outcome("error", message=f"{type(exc).__name__}: {exc}"[:500])
