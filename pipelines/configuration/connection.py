"""The configured database as the launcher and the commands open it: the URL, the
password's environment variable and the statement timeout of the config, closed after
use, its schema created or migrated where the caller writes.

Opening it waits for a database that is down or restarting: the connection (and the
migration, where asked) is retried with exponential backoff for up to
``sink.connect_timeout_seconds``, the last try at that time; the launch-time work of a
run and each command open the database this way. A ``TransientDatabaseError`` that
outlasts the window ends the command with exit 75 (``exit_codes.EXIT_TEMPFAIL``).

Every later call on it follows the retry policy of ``store.retry``: a transient error
(the server restarting, a dropped connection, a lock timeout) is retried on a new
connection with exponential backoff and full jitter, at most ``sink.max_retries`` times
and for at most ``RETRY_SECONDS``; any other error is raised at once."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from store.database import Database, connect, connect_existing
from store.retry import RetryingDatabase, RetryPolicy, with_retries
from store.session import DatabaseSettings

RETRY_SECONDS = 120.0  # how long one call on an open database may keep retrying
UNLIMITED = sys.maxsize  # retries while opening: only the time window bounds them
T = TypeVar("T")


def _connector(s: DatabaseSettings) -> Callable[[], Database]:
    return lambda: connect(s.url, password_env=s.password_env,
                           statement_timeout_ms=s.statement_timeout_ms)


def _within_window(s: DatabaseSettings, fn: Callable[[], T], window: float | None) -> T:
    """``fn()`` retried while the database is unreachable, for up to ``window``
    seconds (default ``sink.connect_timeout_seconds``)."""
    seconds = s.connect_timeout_seconds if window is None else window
    return with_retries(fn, RetryPolicy.of(s, max_retries=UNLIMITED, max_seconds=seconds))


def _retrying(s: DatabaseSettings, first: Database) -> Database:
    """A ``RetryingDatabase`` that starts on the connection ``first``."""
    pending = [first]
    fresh = _connector(s)
    return RetryingDatabase(lambda: pending.pop() if pending else fresh(),
                            RetryPolicy.of(s, max_seconds=RETRY_SECONDS,
                                           away_seconds=s.connect_timeout_seconds))


def _connected(s: DatabaseSettings, migrate: bool) -> Database:
    db = _connector(s)()
    if migrate:
        try:
            db.init_schema()
        except BaseException:
            db.close()
            raise
    return db


def open_database(database: DatabaseSettings, migrate: bool = False,
                  window: float | None = None) -> Database:
    """The configured database (``Config.database``), its schema created or migrated if
    ``migrate``; opening it waits up to ``window`` seconds (default
    ``sink.connect_timeout_seconds``) for a database that is down."""
    first = _within_window(database, lambda: _connected(database, migrate), window)
    return _retrying(database, first)


def open_existing(database: DatabaseSettings, table: str = "tranches") -> Database | None:
    """The configured database if it exists and has ``table``, else None; creates
    nothing (``beamscore plan``, ``runs``, ``triggers``). Waits for a database that is
    down as ``open_database`` does."""
    first = _within_window(database, lambda: connect_existing(
        database.url, password_env=database.password_env, table=table), None)
    return None if first is None else _retrying(database, first)


@contextmanager
def opened(database: DatabaseSettings, migrate: bool = False,
           window: float | None = None) -> Iterator[Database]:
    """``open_database``, closed after use."""
    db = open_database(database, migrate, window)
    try:
        yield db
    finally:
        db.close()
