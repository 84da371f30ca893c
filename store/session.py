"""A database session under the sink's limits: a connection slot, retries, the schema.

``DatabaseSession.run(fn)`` calls ``fn(db)`` on a connection held under a connection
slot (the ``max_connections`` cap), creating or migrating the schema on the first
connection, and retries transient errors with exponential backoff and full jitter,
reconnecting each time. Time spent waiting for a slot or backing off is reported to
``on_wait``, which the sink turns into its throttled-time counters.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from store.database import Database, TransientDatabaseError, connect, database_identity
from store.limits import FileSlots, MachineRateLimiter, RedisRateLimiter, RedisSlots
from store.settings import SinkConfig

_LOG = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class DatabaseSettings(SinkConfig):
    """The database URL and the ``sink`` section's keys (``store.settings.SinkConfig``):
    ``DatabaseSettings(url, max_connections=2)``."""

    url: str

    @property
    def identity(self) -> str:
        return database_identity(self.url)


def with_retries(fn: Callable[[], T], *, max_retries: int, on_wait: Callable[[float], None],
                 base: float = 0.2, cap: float = 30.0,
                 sleep: Callable[[float], None] = time.sleep) -> T:
    """Call ``fn``; on TransientDatabaseError back off exponentially with full jitter."""
    attempt = 0
    while True:
        try:
            return fn()
        except TransientDatabaseError as exc:
            attempt += 1
            if attempt > max_retries:
                raise
            delay = random.uniform(base, min(cap, base * 2 ** attempt))
            _LOG.warning("transient database error (attempt %d/%d, retry in %.2fs): %s",
                         attempt, max_retries, delay, exc)
            on_wait(delay)
            sleep(delay)


def rate_limiter(s: DatabaseSettings, rows_per_second: float, machines: int = 1
                 ) -> MachineRateLimiter | RedisRateLimiter:
    """The job's budget in Redis when configured; else this machine's equal share of it,
    shared by every writer process of the machine."""
    if s.redis_url:
        return RedisRateLimiter(s.redis_url, s.identity, rows_per_second)
    return MachineRateLimiter(s.identity, rows_per_second / max(1, machines), s.state_dir)


class DatabaseSession:
    """One connection held under a connection slot, reopened after transient errors."""

    def __init__(self, s: DatabaseSettings, on_wait: Callable[[float], None] = lambda _: None):
        self._s = s
        self._on_wait = on_wait
        self._db: Database | None = None
        self._slots: FileSlots | RedisSlots | None = None
        self._schema_ready = False

    def _connect(self) -> Database:
        if self._db is None:
            if self._slots is None:
                self._slots = (
                    RedisSlots(self._s.redis_url, self._s.identity, self._s.max_connections)
                    if self._s.redis_url else
                    FileSlots(self._s.identity, self._s.max_connections, self._s.state_dir))
                self._on_wait(self._slots.acquire())
            self._db = connect(self._s.url, password_env=self._s.password_env,
                               statement_timeout_ms=self._s.statement_timeout_ms)
            if not self._schema_ready:
                # Idempotent and serialised by the backend, so the sink works without
                # `beamscore db init`.
                self._db.init_schema()
                self._schema_ready = True
        return self._db

    def _drop_connection(self, waited: float) -> None:
        self._on_wait(waited)
        if self._db is not None:
            try:
                self._db.close()
            except Exception:  # noqa: BLE001 - closing a broken connection may fail
                pass
            self._db = None

    def run(self, fn: Callable[[Database], T]) -> T:
        return with_retries(lambda: fn(self._connect()), max_retries=self._s.max_retries,
                            on_wait=self._drop_connection)

    def close(self) -> None:
        self._drop_connection(0.0)
        if self._slots is not None:
            self._slots.release()
            self._slots = None
