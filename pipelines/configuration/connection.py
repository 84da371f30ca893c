"""The configured database as the launcher and the commands open it: the URL, the
password's environment variable and the statement timeout of the config, closed after
use, its schema created or migrated where the caller writes.

Every call on it follows the retry policy of ``store.retry``: a transient error (the
server restarting, a dropped connection, a lock timeout) is retried on a new
connection with exponential backoff and full jitter, at most ``sink.max_retries``
times and for at most ``RETRY_SECONDS``; any other error is raised at once."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from pipelines.configuration.config import Config
from store.database import Database, connect
from store.retry import RetryingDatabase

RETRY_SECONDS = 120.0  # how long one launcher call may keep retrying a transient error


def open_database(cfg: Config, migrate: bool = False) -> Database:
    db = RetryingDatabase(
        lambda: connect(cfg.db, password_env=cfg.sink.password_env,
                        statement_timeout_ms=cfg.sink.statement_timeout_ms),
        max_retries=cfg.sink.max_retries, max_seconds=RETRY_SECONDS)
    if migrate:
        try:
            db.init_schema()
        except BaseException:
            db.close()
            raise
    return db


@contextmanager
def opened(cfg: Config, migrate: bool = False) -> Iterator[Database]:
    db = open_database(cfg, migrate)
    try:
        yield db
    finally:
        db.close()
