"""The database interface the rest of beamscore uses, and ``connect(url)``.

``connect`` returns a ``Database`` for ``sqlite:///path`` or
``postgresql://user@host:port/db`` (password from the environment variable named by
``password_env``, never from the URL or config). Each backend (``store.backends``)
creates and migrates the versioned schema of ``store.schema`` and offers the same
idempotent writes: an upsert on each table's primary key. Errors are classified as
transient (worth a retry), permanent (the values are rejected; the sink dead-letters
those rows) or a statement error (a bug or a misconfiguration).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any
from urllib.parse import urlsplit

from store.backends.base import (
    AccessDenied,
    BadConnectionOptions,
    Database,
    DatabaseUnreachable,
    Fence,
    LeaseLost,
    PermanentDataError,
    SchemaMismatch,
    StatementError,
    TransientDatabaseError,
    port_problem,
    redact,
)
from store.backends.postgres import PostgresDatabase
from store.backends.sqlite import SQLiteDatabase

__all__ = ["BACKENDS", "AccessDenied", "BadConnectionOptions", "Database",
           "DatabaseUnreachable", "Fence", "LeaseLost", "PermanentDataError", "SchemaMismatch",
           "StatementError", "TransientDatabaseError", "backend_of", "carries_password",
           "connect", "connect_existing", "database_identity", "from_json",
           "one_writer_at_a_time", "port_problem", "redact", "redact_text", "to_json", "to_text"]

# URL scheme -> backend; a new database is one module in store.backends and a line here.
BACKENDS: dict[str, type[Database]] = {
    "sqlite": SQLiteDatabase,
    "postgresql": PostgresDatabase,
    "postgres": PostgresDatabase,
}


def _backend(url: str) -> type[Database]:
    """The backend of ``url``'s scheme; a ValueError naming the scheme only (the URL may
    hold a password)."""
    scheme = urlsplit(url).scheme
    if scheme not in BACKENDS:
        named = f"scheme {scheme!r}" if scheme else "no scheme"
        raise ValueError(f"unsupported database URL ({named}): use sqlite:///path or "
                         "postgresql://user@host:port/db")
    return BACKENDS[scheme]


def carries_password(url: str) -> bool:
    """Whether a database URL holds a password, as its database's client reads one
    (``password =`` anywhere counts too: a libpq key-value string), or as any URL holds
    one (``user:secret@``) whatever its scheme."""
    if re.search(r"password\s*=", url, re.IGNORECASE):
        return True
    try:
        return _backend(url).carries_password(url)
    except ValueError:
        return Database.carries_password(url)


_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\",\]}]*")


def redact_text(text: str) -> str:
    """``text`` with every URL in it redacted (``redact``): for a message that quotes
    what a user gave (an argument, a config value), which may be a URL with a secret."""
    return _URL_IN_TEXT.sub(lambda m: redact(m.group(0)), text)


def backend_of(url: str) -> str:
    """The name of the database ``url`` addresses (``sqlite``, ``postgresql``)."""
    return _backend(url).dialect.name


def one_writer_at_a_time(url: str) -> bool:
    """Whether the writers of one machine must take turns on the database ``url``."""
    return _backend(url).one_writer_at_a_time


def database_identity(url: str) -> str:
    """What makes two URLs the same database: host, port and database name, or the
    SQLite file's absolute path (user names and options do not count)."""
    return _backend(url).identity(url)


def to_json(value: Any) -> str:
    """A document for a ``json`` column (TEXT in SQLite, jsonb in PostgreSQL)."""
    return json.dumps(value, sort_keys=True)


def from_json(value: Any) -> Any:
    """A ``json`` column's value as Python data (PostgreSQL returns it parsed already)."""
    return json.loads(value) if isinstance(value, (str, bytes)) else value


def to_text(value: Any) -> Any:
    """A ``time`` column's value as ISO-8601 text (PostgreSQL returns datetimes)."""
    return value.isoformat() if isinstance(value, dt.datetime) else value


def connect(url: str, *, password_env: str = "PGPASSWORD",
            statement_timeout_ms: int = 30_000) -> Database:
    return _backend(url).open(url, password_env=password_env,
                              statement_timeout_ms=statement_timeout_ms)


def connect_existing(url: str, *, password_env: str = "PGPASSWORD",
                     table: str = "tranches") -> Database | None:
    """The database if it exists and has ``table``; None otherwise. Creates nothing
    (``beamscore plan`` must not create a database file)."""
    if not _backend(url).exists(url):
        return None
    db = connect(url, password_env=password_env)
    try:
        found = db.has_table(table)
    except BaseException:
        db.close()  # a retry opens another connection: this one is not left open
        raise
    if not found:
        db.close()
        return None
    return db
