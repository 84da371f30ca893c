"""A database session under the sink's limits: a connection slot, retries, the schema.

``DatabaseSession.run(fn)`` calls ``fn(db)`` on a connection held under a connection
slot (the ``max_connections`` cap), creating or migrating the schema on the first
connection, and retries transient errors under the policy of ``store.retry``,
reconnecting each time: a database that is away (down, restarting) is waited for up to
``sink.connect_timeout_seconds``, as at launch, any other transient error retried
``sink.max_retries`` times. Time spent waiting for a slot, for the machine's SQLite writer,
in a try that failed or backing off is reported to ``on_wait``: the sink counts it as
waiting for the database.

``write(fn)`` is ``run`` for one write transaction of the sink: on SQLite, which has a
single writer, it takes the machine's ``WriterLock`` around the transaction (writers
queue in the kernel, not in SQLite's sleeping busy handler; the schema check of a
session's first connection, a write transaction too, takes it the same way, so its wait
is counted as well); afterwards it gives the connection and its slot up if another
writer waits for a slot (``yield_if_contended``), so that ``max_connections`` slots
serve any number of workers without a convoy, and a lone writer keeps its connection
for its bundle.

A session about to wait for a slot first asks the other sessions of the same database
whose slots its thread took, idle between their calls, to give theirs up: the sink's
writes of predictions and of dead letters run in one thread, and with fewer slots than
that needs one would otherwise wait for the other, which cannot write (and yield)
meanwhile.

``ready()`` says whether a write could start now without waiting: the session holds its
slot or takes a free one (and keeps it), and the machine's SQLite writer is free. A
session that finds every slot of the machine taken counts as waiting from then on (file
slots; the job's slots in Redis count only a blocked wait), so that the holders give
theirs up after their next write, while its worker goes on with other work (the sink's
buffer then fills further) instead of blocking.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, TypeVar

from store.database import Database, connect, database_identity, one_writer_at_a_time
from store.file_locks import FileSlots, LockWaitTimeout, WriterLock, in_turn
from store.limits import MachineRateLimiter, RedisRateLimiter, RedisSlots, state_path
from store.retry import Reconnecting, RetryPolicy
from store.settings import SinkConfig

T = TypeVar("T")


@dataclass(frozen=True)
class DatabaseSettings(SinkConfig):
    """The database URL and the ``sink`` section's keys (``store.settings.SinkConfig``):
    ``DatabaseSettings(url, max_connections=2)``."""

    url: str

    @property
    def identity(self) -> str:
        return database_identity(self.url)


def rate_limiter(s: DatabaseSettings, rows_per_second: float, machines: int = 1
                 ) -> MachineRateLimiter | RedisRateLimiter:
    """The job's budget in Redis when configured; else this machine's equal share of it,
    shared by every writer process of the machine."""
    if s.redis_url:
        return RedisRateLimiter(s.redis_url, s.identity, rows_per_second)
    return MachineRateLimiter(s.identity, rows_per_second / max(1, machines), s.state_dir)


def _counting_timeout(acquire: Callable[[], float], on_wait: Callable[[float], None]
                      ) -> float:
    """``acquire()``; the time a ``LockWaitTimeout`` waited is reported to ``on_wait``
    before the error goes on to be retried."""
    try:
        return acquire()
    except LockWaitTimeout as exc:
        on_wait(exc.waited)
        raise


class DatabaseSession(Reconnecting):
    """One connection held under a connection slot, reopened after transient errors."""

    MIN_HOLD_SECONDS = 0.25
    # Sessions holding a slot, by database: a session about to wait asks the idle ones
    # whose slots its own thread took to give theirs up first (``_yield_siblings``).
    _holders: ClassVar[dict[str, weakref.WeakSet[DatabaseSession]]] = {}
    _registry = threading.Lock()

    def __init__(self, s: DatabaseSettings, on_wait: Callable[[float], None] = lambda _: None):
        super().__init__(self._open_under_slot,
                         RetryPolicy.of(s, away_seconds=s.connect_timeout_seconds),
                         on_wait=on_wait)
        self._s = s
        self._slots: FileSlots | RedisSlots | None = None
        self._wanted: FileSlots | RedisSlots | None = None  # counted as waiting for these
        self._writer = (WriterLock(s.identity, s.state_dir, timeout=s.lease_seconds)
                        if one_writer_at_a_time(s.url) else None)
        self._schema_ready = False
        self._held_since = 0.0
        self.yielded = 0  # times this session gave its slot up to a waiting writer
        self._busy = threading.RLock()  # held while a call runs on this session
        self._holder_thread = 0  # the thread that took the slot held

    def _new_slots(self) -> FileSlots | RedisSlots:
        """The job's connection slots (a slot not yet taken), or the ones this session
        counts as waiting for."""
        if self._wanted is not None:
            return self._wanted
        return (RedisSlots(self._s.redis_url, self._s.identity, self._s.max_connections,
                           timeout=self._s.lease_seconds)
                if self._s.redis_url else
                FileSlots(self._s.identity, self._s.max_connections, self._s.state_dir,
                          timeout=self._s.lease_seconds))

    def _hold(self, slots: FileSlots | RedisSlots) -> None:
        self._slots, self._wanted = slots, None
        self._held_since = time.monotonic()
        self._holder_thread = threading.get_ident()
        with DatabaseSession._registry:
            DatabaseSession._holders.setdefault(self._s.identity, weakref.WeakSet()).add(self)

    def _yield_siblings(self) -> None:
        """Before waiting for a slot: the other sessions of the database that this thread
        took slots for, idle between their calls, give theirs up (the sink's predictions
        and dead letters are written from one thread: one could otherwise wait for a
        slot the other holds and cannot give up while the thread waits). Sessions of
        other threads, like other processes', give theirs up after their next write."""
        me = threading.get_ident()
        with DatabaseSession._registry:
            siblings = [other for other in DatabaseSession._holders.get(self._s.identity, ())
                        if other is not self and other._holder_thread == me]
        for other in siblings:
            if not other._busy.acquire(blocking=False):
                continue
            try:
                if other._slots is not None:
                    other.close()
                    other.yielded += 1
            finally:
                other._busy.release()

    def run(self, fn: Callable[[Database], T]) -> T:
        with self._busy:
            return super().run(fn)

    def _connect(self) -> Database:
        # Within the try, so that a Redis that does not answer here is waited for too.
        if self._slots is not None and not self._slots.keep():
            self.close()  # the slot expired while held idle: take one again first
        return super()._connect()

    def ready(self) -> bool:
        """Whether a write could start now without waiting (see the module's
        docstring); never waits itself."""
        if self._slots is None:
            slots = self._new_slots()
            if not slots.try_acquire():
                self._wanted = slots
                return False
            self._hold(slots)
        return self._writer is None or self._writer.free()

    def _open_under_slot(self) -> Database:
        if self._slots is None:
            slots = self._new_slots()
            if not slots.try_acquire():
                self._yield_siblings()
                self._report(_counting_timeout(self._waiter(slots), self._report))
            self._hold(slots)
        db = connect(self._s.url, password_env=self._s.password_env,
                     statement_timeout_ms=self._s.statement_timeout_ms)
        if not self._schema_ready:
            # Idempotent and serialised by the backend, so the sink works without
            # `beamscore db init`.
            try:
                self._under_writer_lock(db.init_schema)
            except BaseException:
                db.close()
                raise
            self._schema_ready = True
        return db

    def _waiter(self, slots: FileSlots | RedisSlots) -> Callable[[], float]:
        """How to wait for a slot: Redis's are polled by one process of the machine at
        a time (``in_turn``; file slots queue their waiters themselves)."""
        if isinstance(slots, FileSlots):
            return slots.acquire
        queue = state_path(self._s.identity, "redis-queue.lock", self._s.state_dir)
        what = "the machine's turn to wait for a connection slot of the job (in Redis)"

        def wait() -> float:
            started = time.monotonic()  # one bound for the turn and the slot together
            in_turn(queue, what, lambda: slots.acquire(started=started),
                    self._s.lease_seconds, started=started, meanwhile=slots.try_acquire)
            return time.monotonic() - started
        return wait

    def _under_writer_lock(self, fn: Callable[[], T]) -> T:
        """``fn()`` holding the machine's writer lock where the database has one writer
        (its wait counted as waiting for the database), else just ``fn()``."""
        writer = self._writer
        if writer is None:
            return fn()
        self._report(_counting_timeout(writer.acquire, self._report))
        try:
            return fn()
        finally:
            writer.release()

    def hold(self) -> None:
        """Hold a connection (and its slot), waiting for one if need be: what a writer
        does before it books rows against the rate limit, so that it never holds a
        booking while it waits for a slot (which a holder waiting for budget would
        never give up)."""
        self.run(lambda db: None)

    def write(self, fn: Callable[[Database], T]) -> T:
        """``run(fn)`` for one write transaction (see the module's docstring). The
        writer lock is taken only once the connection (and its slot) is held, never
        while waiting for a slot: one order, no deadlock between the two."""
        try:
            return self.run(lambda db: self._under_writer_lock(lambda: fn(db)))
        finally:
            self.yield_if_contended()

    def yield_if_contended(self) -> bool:
        """Close the connection and free its slot if another writer waits for one and
        this one has held it for ``MIN_HOLD_SECONDS`` (a new connection costs a few
        milliseconds: the slot changes hands every few writes, not at each)."""
        if (self._slots is None or time.monotonic() - self._held_since < self.MIN_HOLD_SECONDS
                or not self._slots.contended()):
            return False
        self.close()
        self.yielded += 1
        return True

    def close(self) -> None:
        with self._busy:
            super().close()
            for slots in (self._slots, self._wanted):
                if slots is not None:
                    slots.release()
            self._slots = self._wanted = None
        with DatabaseSession._registry:
            DatabaseSession._holders.get(self._s.identity, weakref.WeakSet()).discard(self)
