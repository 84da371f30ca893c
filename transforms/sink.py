"""The database sink: one batched, rate-limited, connection-capped write DoFn.

``WriteFn`` follows Beam's datastoreio write. It opens its session in ``setup`` and
holds the connection (and its ``max_connections`` slot) for one bundle; buffers
elements up to a row and a byte limit, cutting an element at the limit, and flushes
when full and in ``finish_bundle``. A buffer full of rows whose write would have to
wait (every connection slot taken, or the machine's SQLite writer busy:
``DatabaseSession.ready``) is not flushed yet: the worker goes on scoring and the rows
wait in the buffer, up to ``DEFERRED_ROWS`` times the row limit (the byte limit is
never exceeded), so a worker waits for the database only when its buffer is that full
or its bundle ends. Elements are cut at every multiple of the row limit, so a flush is
whole writes of it either way. Only a table that says so defers (predictions; dead
letters are stored as they come, at most ``flush_at`` held). Every write goes through
the rate limiter (``store.limits``) in writes of at most ``write_size`` rows and retries
transient errors (``store.retry``). Each write is one transaction of the session's ``write``: on
SQLite the machine's one writer at a time, and the connection slot is given up after
the write when another worker waits for one (``store.session``), so the cost of a write
does not grow with the number of workers.

Waiting is counted in two kinds: for the rate limit (``rate_limited_ms``) and for the
database (``db_wait_ms``: a connection slot, the SQLite writer, backoff after a
transient error); both go into ``cumulativeThrottlingSeconds`` (Beam's convention, read
by Dataflow's autoscaler) and ``throttled_ms``. The sink adds the same three to the
stats of each main output (``wait_stats``: the time waited since its last main output),
whichever use it serves, so the run summary's "rate-limited" and "waited for database"
cover the writes of predictions and of dead letters alike.

One rule for rows the database rejects (``PermanentDataError``): the write is bisected
down to the rejected rows, and the rest is written; ``write`` returns each rejected
row's index with the database's message.

What is written, and what is emitted, is the ``SinkTable``'s: predictions
(``transforms.write``) and dead letters (``transforms.dead_letters``) are its two uses.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from itertools import chain
from typing import Any, Generic, Protocol, TypeVar

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from store.database import Database, Fence, PermanentDataError
from store.retry import RetryPolicy, with_retries
from store.session import DatabaseSession, DatabaseSettings, rate_limiter

_LOG = logging.getLogger(__name__)
E = TypeVar("E")  # an input element
P = TypeVar("P")  # a buffered piece of one


class SinkLimits(Protocol):
    """The sink's settings (``transforms.write.SinkSettings``)."""

    @property
    def database(self) -> DatabaseSettings: ...
    @property
    def max_rows_per_second(self) -> float: ...
    @property
    def machines(self) -> int: ...
    @property
    def progress_seconds(self) -> float: ...
    @property
    def write_size(self) -> int: ...


@dataclass
class Waits:
    """Seconds waited so far: for the rate limit, and for the database."""

    rate_limited: float = 0.0
    database: float = 0.0

    @property
    def total(self) -> float:
        return self.rate_limited + self.database


class ThrottleTimer:
    """Counts waiting of both kinds: whole seconds into ``cumulativeThrottlingSeconds``
    (Beam's convention, read by Dataflow's autoscaler), milliseconds per kind for the
    run summary."""

    def __init__(self, namespace: str = "beamscore"):
        self._seconds = Metrics.counter(namespace, "cumulativeThrottlingSeconds")
        self._ms = Metrics.counter(namespace, "throttled_ms")
        self._rate_ms = Metrics.counter(namespace, "rate_limited_ms")
        self._db_ms = Metrics.counter(namespace, "db_wait_ms")
        self._carry = 0.0
        self.waits = Waits()

    def add_rate_limited(self, seconds: float) -> None:
        if seconds > 0:
            self.waits.rate_limited += seconds
            self._rate_ms.inc(int(seconds * 1000))
            self._add(seconds)

    def add_database(self, seconds: float) -> None:
        if seconds > 0:
            self.waits.database += seconds
            self._db_ms.inc(int(seconds * 1000))
            self._add(seconds)

    def _add(self, seconds: float) -> None:
        self._ms.inc(int(seconds * 1000))
        self._carry += seconds
        whole = int(self._carry)
        if whole:
            self._seconds.inc(whole)
            self._carry -= whole


def wait_stats(before: Waits, after: Waits, rate_limited: bool) -> dict[str, int]:
    """The stats of the waiting between two ``Waits``: ``rate_limited_ms`` (always when
    a rate limit is set, so the summary knows one was), ``db_wait_ms`` and their sum
    ``throttled_ms`` (when not 0)."""
    rate_ms = int((after.rate_limited - before.rate_limited) * 1000)
    db_ms = int((after.database - before.database) * 1000)
    stats = {"rate_limited_ms": rate_ms} if rate_limited else {}
    if db_ms:
        stats["db_wait_ms"] = db_ms
    if rate_ms + db_ms:
        stats["throttled_ms"] = rate_ms + db_ms
    return stats


def windowed(value: Any) -> WindowedValue:
    """Outputs of ``finish_bundle`` must carry their window explicitly."""
    return WindowedValue(value, MIN_TIMESTAMP, (GlobalWindow(),))


def rejected_reason(message: str) -> str:
    """The reason a sink dead letter gives for a row the database rejected."""
    return f"database rejected the row: {message}"[:1000]


class Writer(Protocol):
    """What a ``SinkTable`` writes through while it flushes."""

    def write(self, rows: Sequence[tuple[Any, ...]]) -> dict[int, str]:
        """Write ``rows``; returns {index: the database's message} of those rejected."""
        ...

    def check_lease(self, fence: Fence, tranche: str) -> None:
        """Raise ``LeaseLost`` unless ``fence``'s run still holds ``tranche``."""
        ...


class SinkTable(Generic[E, P]):
    """One use of the sink: how elements are buffered, written and what is emitted.

    ``prepare`` turns an element into a piece of ``n`` rows of about ``row_bytes``
    bytes each (0: not counted against the byte limit), or None if it has no rows;
    ``cut`` takes rows [start, end) of a piece; ``flush`` builds the buffered pieces'
    rows, writes them through the writer (which calls ``upsert``) and yields
    (tag, value) outputs, tag None for the main output, whose value is a (tranche,
    stats) pair: the sink adds its wait stats to the stats."""

    flush_rows: int = 5000
    flush_bytes: int = 16 << 20
    logs_progress = False  # log this worker's rows written every progress_seconds
    defers = False  # a full buffer may wait while the database is taken (WriteFn)

    def prepare(self, element: E) -> tuple[P, int, int] | None:
        raise NotImplementedError

    def cut(self, piece: P, start: int, end: int) -> P:
        raise NotImplementedError

    def flush(self, pieces: list[P], writer: Writer) -> Iterator[tuple[str | None, Any]]:
        raise NotImplementedError

    def upsert(self, db: Database, rows: Sequence[tuple[Any, ...]]) -> int:
        raise NotImplementedError

    def finish(self, writer: Writer) -> Iterator[tuple[str | None, Any]]:
        """After a bundle's last flush: what needs all of its rows; outputs as ``flush``'s."""
        return iter(())

    def reset(self) -> None:
        """Drop what a bundle left (it starts, or one failed before ``finish``)."""


class WriteFn(beam.DoFn, Generic[E, P]):
    """Buffers the pieces of ``table``, flushes them through the limits of ``limits``."""

    DEFERRED_ROWS = 3  # a full buffer may grow to this many times its row limit

    def __init__(self, limits: SinkLimits, table: SinkTable[E, P]):
        self._s = limits
        self._table = table

    def setup(self) -> None:
        self._limiter = rate_limiter(self._s.database, self._s.max_rows_per_second,
                                     self._s.machines)
        self._timer = ThrottleTimer()
        self._reported = Waits()  # the waits already in an emitted main output
        self._session = DatabaseSession(self._s.database, self._timer.add_database)
        self._policy = RetryPolicy.of(self._s.database,
                                      away_seconds=self._s.database.connect_timeout_seconds)
        self._last_log = time.monotonic()
        self._rows_total = 0

    def start_bundle(self) -> None:
        self._pieces: list[P] = []
        self._rows = 0
        self._bytes = 0
        self._table.reset()

    def process(self, element: E) -> Iterator[Any]:
        prepared = self._table.prepare(element)
        if prepared is None:
            return
        piece, n, row_bytes = prepared
        full_rows, limit_bytes = self._table.flush_rows, self._table.flush_bytes
        limit_rows = full_rows * (self.DEFERRED_ROWS if self._table.defers else 1)
        start = 0
        while start < n:
            # Cut at every multiple of the row limit: a flush is whole writes of it.
            room = min(limit_rows - self._rows, full_rows - self._rows % full_rows)
            if row_bytes:
                room = min(room, -(-(limit_bytes - self._bytes) // row_bytes))
            end = min(n, start + max(1, room))
            self._pieces.append(piece if start == 0 and end == n
                                else self._table.cut(piece, start, end))
            self._rows += end - start
            self._bytes += (end - start) * row_bytes
            start = end
            if (self._rows >= limit_rows or self._bytes >= limit_bytes
                    or (self._rows % full_rows == 0 and self._session.ready())):
                for tag, value in self._flush():
                    yield value if tag is None else beam.pvalue.TaggedOutput(tag, value)

    def finish_bundle(self) -> Iterator[Any]:
        try:
            for tag, value in chain(self._flush(), self._finish()):
                yield windowed(value) if tag is None else \
                    beam.pvalue.TaggedOutput(tag, windowed(value))
        finally:
            self._table.reset()
            self._session.close()

    def teardown(self) -> None:
        self._table.reset()
        self._session.close()

    @property
    def waits(self) -> Waits:
        """Time waited so far (a copy): for the rate limit, for the database."""
        return replace(self._timer.waits)

    @property
    def rate_limited(self) -> bool:
        """Whether a rate limit is set."""
        return self._s.max_rows_per_second > 0

    def check_lease(self, fence: Fence, tranche: str) -> None:
        self._session.run(lambda db: db.check_lease(fence, [tranche]))

    def write(self, rows: Sequence[tuple[Any, ...]]) -> dict[int, str]:
        rejected: dict[int, str] = {}
        size = self._s.write_size
        for start in range(0, len(rows), size):
            self._write_isolating(rows, start, min(len(rows), start + size), rejected)
        return rejected

    def _flush(self) -> Iterator[tuple[str | None, Any]]:
        pieces, rows = self._pieces, self._rows
        self._pieces, self._rows, self._bytes = [], 0, 0
        if not pieces:
            return
        for tag, value in self._table.flush(pieces, self):
            yield tag, (self._with_waits(value) if tag is None else value)
        if self._table.logs_progress:
            self._log_progress(rows)

    def _finish(self) -> Iterator[tuple[str | None, Any]]:
        for tag, value in self._table.finish(self):
            yield tag, (self._with_waits(value) if tag is None else value)

    def _with_waits(self, value: tuple[str, dict[str, Any]]) -> tuple[str, dict[str, Any]]:
        """A main output's (tranche, stats) with the time waited since the last one."""
        tranche, stats = value
        now = self.waits
        waited = wait_stats(self._reported, now, self.rate_limited)
        self._reported = now
        return tranche, {**stats, **waited}

    def _log_progress(self, n: int) -> None:
        self._rows_total += n
        if time.monotonic() - self._last_log >= self._s.progress_seconds:
            self._last_log = time.monotonic()
            _LOG.info("sink progress: %d rows written by this worker, rate-limited %.1fs, "
                      "waited for database %.1fs", self._rows_total,
                      self._timer.waits.rate_limited, self._timer.waits.database)

    def _write_isolating(self, rows: Sequence[tuple[Any, ...]], lo: int, hi: int,
                         rejected: dict[int, str]) -> None:
        """Write rows[lo:hi]; on a permanent error bisect down to the rejected rows."""
        part = rows[lo:hi]
        # A connection slot first, then the rate's budget (one order: a writer holding a
        # booking never waits for a slot that a writer waiting for budget holds).
        if self.rate_limited:
            self._session.hold()
        # The job's budget in Redis: a Redis away is waited out as a database would be.
        with_retries(lambda: self._limiter.allow(hits_added=len(part)), self._policy,
                     on_wait=self._timer.add_database)
        self._timer.add_rate_limited(self._limiter.last_wait)
        try:
            self._session.write(lambda db: self._table.upsert(db, part))
            return
        except PermanentDataError as exc:
            if hi - lo == 1:
                rejected[lo] = str(exc)
                return
        finally:
            self._limiter.done()
        mid = (lo + hi) // 2
        self._write_isolating(rows, lo, mid, rejected)
        self._write_isolating(rows, mid, hi, rejected)
