"""A database session under the sink's limits: a connection slot, retries, the schema.

``DatabaseSession.run(fn)`` calls ``fn(db)`` on a connection held under a connection
slot (the ``max_connections`` cap), creating or migrating the schema on the first
connection, and retries transient errors under the policy of ``store.retry``,
reconnecting each time. Time spent waiting for a slot or backing off is reported to
``on_wait``, which the sink turns into its throttled-time counters.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from store.database import Database, connect, database_identity
from store.limits import FileSlots, MachineRateLimiter, RedisRateLimiter, RedisSlots
from store.retry import Reconnecting, RetryPolicy
from store.settings import SinkConfig


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


class DatabaseSession(Reconnecting):
    """One connection held under a connection slot, reopened after transient errors."""

    def __init__(self, s: DatabaseSettings, on_wait: Callable[[float], None] = lambda _: None):
        super().__init__(self._open_under_slot, RetryPolicy.of(s), on_wait=on_wait)
        self._s = s
        self._slots: FileSlots | RedisSlots | None = None
        self._schema_ready = False

    def _open_under_slot(self) -> Database:
        if self._slots is None:
            self._slots = (
                RedisSlots(self._s.redis_url, self._s.identity, self._s.max_connections)
                if self._s.redis_url else
                FileSlots(self._s.identity, self._s.max_connections, self._s.state_dir))
            self._on_wait(self._slots.acquire())
        db = connect(self._s.url, password_env=self._s.password_env,
                     statement_timeout_ms=self._s.statement_timeout_ms)
        if not self._schema_ready:
            # Idempotent and serialised by the backend, so the sink works without
            # `beamscore db init`.
            try:
                db.init_schema()
            except BaseException:
                db.close()
                raise
            self._schema_ready = True
        return db

    def close(self) -> None:
        super().close()
        if self._slots is not None:
            self._slots.release()
            self._slots = None
