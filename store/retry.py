"""The one retry policy for database calls, and a ``Database`` that follows it.

``with_retries(fn, policy)`` calls ``fn`` and decides by the error's class: a
``TransientDatabaseError`` (connection lost, server restart, lock or statement timeout)
is retried after an exponential backoff with full jitter, at most ``max_retries``
times and, when ``max_seconds`` is given, until that much time since the first try
(the last try is made then); a ``DatabaseUnreachable`` (the server away) is retried
for ``away_seconds`` since the first try whatever the count, when the policy gives
that window (the sink's is ``sink.connect_timeout_seconds``: a database restarted
during a run is waited for as long as at launch); every other error is raised at once.
A ``RetryPolicy`` holds those numbers; ``RetryPolicy.of(sink)`` is the one the ``sink``
settings configure, so a new retry setting is a field of ``store.settings.SinkConfig``
read here. The sink's sessions (``store.session``) and the launcher's connections
(``RetryingDatabase``, ``pipelines.configuration.connection``) both retry through it.

``Reconnecting.run(fn)`` calls ``fn(db)`` under the policy and reopens the connection
after each transient error. ``RetryingDatabase`` is a ``Database`` whose every call
does so; each of beamscore's statements is idempotent (an upsert, or an update or
insert keyed by its run), so a call whose answer was lost is safe to repeat.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from store.database import Database, DatabaseUnreachable, Fence, TransientDatabaseError
from store.schema import Table
from store.settings import SinkConfig

_LOG = logging.getLogger(__name__)
T = TypeVar("T")

BASE_SECONDS = 0.2  # the first backoff is drawn from [base, 2 base]
CAP_SECONDS = 30.0  # no backoff is longer


@dataclass(frozen=True)
class RetryPolicy:
    """How a database call retries transient errors: at most ``max_retries`` retries
    and, when ``max_seconds`` is finite, no longer than that since the first try (a
    ``DatabaseUnreachable`` for ``away_seconds`` instead, when not 0); backoffs drawn
    from ``base`` seconds, doubling, at most ``cap``."""

    max_retries: int
    max_seconds: float = math.inf
    base: float = BASE_SECONDS
    cap: float = CAP_SECONDS
    away_seconds: float = 0.0  # a DatabaseUnreachable: retried this long, any count

    @classmethod
    def of(cls, sink: SinkConfig, **bounds: Any) -> RetryPolicy:
        """The policy the ``sink`` settings configure; ``bounds`` (e.g. ``max_seconds``)
        replace what the caller bounds itself."""
        return replace(cls(max_retries=sink.max_retries), **bounds)


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is worth a retry: the backends classify their errors into
    ``TransientDatabaseError`` and ``PermanentDataError``."""
    return isinstance(exc, TransientDatabaseError)


def backoff(attempt: int, base: float = BASE_SECONDS, cap: float = CAP_SECONDS) -> float:
    """The wait before retry ``attempt`` (1, 2, ...): drawn uniformly up to
    ``base * 2**attempt`` (at most ``cap``), and at least ``base``."""
    return random.uniform(base, max(base, min(cap, base * 2 ** min(attempt, 60))))


def with_retries(fn: Callable[[], T], policy: RetryPolicy, *,
                 on_wait: Callable[[float], None] = lambda _: None,
                 sleep: Callable[[float], None] | None = None,
                 clock: Callable[[], float] | None = None) -> T:
    """Call ``fn``; retry transient errors with exponential backoff and full jitter.

    ``on_wait(seconds)`` is told, before each backoff is slept, of the time the failed
    try took and the backoff: the time the database kept the caller waiting. A backoff
    that would end after the window of the error (``max_seconds`` since the first call,
    ``away_seconds`` for a ``DatabaseUnreachable`` when the policy sets it) is cut short
    to end then, for one last try; the last error is raised once that last try failed
    or, outside an away window, ``max_retries`` retries did. ``sleep`` and ``clock``
    default to the ``time`` module's."""
    sleep = sleep or time.sleep
    clock = clock or time.monotonic
    started = clock()
    attempt, last = 0, False
    while True:
        tried = clock()
        try:
            return fn()
        except Exception as exc:
            if not is_transient(exc):
                raise
            attempt += 1
            away = isinstance(exc, DatabaseUnreachable) and policy.away_seconds > 0
            if last or (attempt > policy.max_retries and not away):
                raise
            delay = backoff(attempt, policy.base, policy.cap)
            now = clock()
            left = (policy.away_seconds if away else policy.max_seconds) - (now - started)
            if delay >= left:
                delay, last = max(0.0, left), True
            _LOG.warning("transient database error (attempt %d, retry in %.2fs): %s",
                         attempt, delay, exc)
            on_wait(now - tried + delay)
            sleep(delay)


class Reconnecting:
    """One connection, opened on first use and reopened after each transient error;
    ``run(fn)`` calls ``fn(db)`` under the retry policy. ``on_wait`` is told of the time
    the database kept the caller waiting: the waits a subclass measures within a try
    (``_report``), and the rest of each failed try and its backoff."""

    def __init__(self, connect: Callable[[], Database], policy: RetryPolicy, *,
                 on_wait: Callable[[float], None] = lambda _: None,
                 sleep: Callable[[float], None] | None = None,
                 clock: Callable[[], float] | None = None):
        self._open = connect
        self._policy = policy
        self._on_wait = on_wait
        self._sleep = sleep
        self._clock = clock
        self._db: Database | None = None
        self._reported = 0.0  # waits of the current try told already

    def _connect(self) -> Database:
        if self._db is None:
            self._db = self._open()
        return self._db

    def _report(self, seconds: float) -> None:
        """A wait measured within a try (for a connection slot, a writer lock)."""
        self._reported += seconds
        self._on_wait(seconds)

    def _failed(self, waited: float) -> None:
        """A try failed: ``waited`` (the try and its backoff) less what was told."""
        self._on_wait(max(0.0, waited - self._reported))
        self._drop_connection()

    def _drop_connection(self) -> None:
        if self._db is not None:
            try:
                self._db.close()
            except Exception:  # noqa: BLE001 - closing a broken connection may fail
                pass
            self._db = None

    def run(self, fn: Callable[[Database], T]) -> T:
        def attempt() -> T:
            self._reported = 0.0
            return fn(self._connect())

        return with_retries(attempt, self._policy, on_wait=self._failed, sleep=self._sleep,
                            clock=self._clock)

    def close(self) -> None:
        self._drop_connection()


class RetryingDatabase(Database):
    """A ``Database`` whose calls retry transient errors on a fresh connection.

    It connects (under the policy) when created. ``migration_lock`` is a transaction
    on the current connection and is not retried; ``init_schema`` retries the whole
    migration. Attributes only a backend has are read from the current connection."""

    # Built on the methods below, so retried statement by statement through them.
    COMPOSED = frozenset({"update", "upsert_values", "check_fence", "check_lease"})

    def __init__(self, connect: Callable[[], Database], policy: RetryPolicy, *,
                 sleep: Callable[[float], None] | None = None):
        self._conn = Reconnecting(connect, policy, sleep=sleep)
        self._conn.run(lambda db: db)  # the dialect and placeholder are the connection's

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "_conn":
            raise AttributeError(name)
        return getattr(self._conn.run(lambda db: db), name)

    def init_schema(self) -> None:
        self._conn.run(lambda db: db.init_schema())

    def migration_lock(self) -> AbstractContextManager[None]:
        return self._conn.run(lambda db: db).migration_lock()

    def exclusively(self, key: str) -> AbstractContextManager[None]:
        return self._conn.run(lambda db: db).exclusively(key)

    def upsert(self, table: Table, rows: Sequence[tuple[Any, ...]],
               fence: Fence | None = None) -> int:
        return self._conn.run(lambda db: db.upsert(table, rows, fence))

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._conn.run(lambda db: db.execute(sql, params))

    def execute_count(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self._conn.run(lambda db: db.execute_count(sql, params))

    def upsert_predictions(self, rows: Sequence[tuple[Any, ...]],
                           fence: Fence | None = None) -> int:
        return self._conn.run(lambda db: db.upsert_predictions(rows, fence))

    def upsert_dead_letters(self, rows: Sequence[tuple[Any, ...]],
                            fence: Fence | None = None) -> int:
        return self._conn.run(lambda db: db.upsert_dead_letters(rows, fence))

    def upsert_run(self, row: dict[str, Any]) -> None:
        self._conn.run(lambda db: db.upsert_run(row))

    def has_table(self, name: str) -> bool:
        return self._conn.run(lambda db: db.has_table(name))

    def close(self) -> None:
        self._conn.close()
