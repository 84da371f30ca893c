"""The database interface the rest of beamscore uses, and ``connect(url)``.

``connect`` returns a ``Database`` for ``sqlite:///path`` or
``postgresql://user@host:port/db`` (password from the environment variable named by
``password_env``, never from the URL or config). Both backends create and migrate the
versioned schema of ``store.schema`` and offer the same idempotent writes: an upsert
on each table's primary key. Errors are classified as transient (worth a retry) or
permanent (the values are rejected; the sink dead-letters those rows).
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any
from urllib.parse import urlsplit

from store.schema import DEAD_LETTERS, PREDICTIONS, RUNS, Table


class TransientDatabaseError(Exception):
    """Worth retrying: connection lost, server restart, lock or statement timeout."""


class PermanentDataError(Exception):
    """The database rejects these values; retrying cannot help."""


def backend_of(url: str) -> str:
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        return "sqlite"
    if scheme in ("postgresql", "postgres"):
        return "postgresql"
    raise ValueError(f"unsupported database URL {url!r}: use sqlite:///path or postgresql://...")


def sqlite_path(url: str) -> str:
    """The file of a ``sqlite:///path`` URL (relative to the working directory;
    ``sqlite:////abs/path`` is absolute)."""
    return url[len("sqlite:///"):] if url.startswith("sqlite:///") else url[len("sqlite://"):]


def database_identity(url: str) -> str:
    """What makes two URLs the same database: host, port and database name, or the
    SQLite file's absolute path (user names and options do not count)."""
    if backend_of(url) == "sqlite":
        return "sqlite:" + os.path.abspath(sqlite_path(url))
    parts = urlsplit(url)
    return f"postgresql://{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path}"


def to_json(value: Any) -> str:
    """A document for a ``json`` column (TEXT in SQLite, jsonb in PostgreSQL)."""
    return json.dumps(value, sort_keys=True)


def from_json(value: Any) -> Any:
    """A ``json`` column's value as Python data (PostgreSQL returns it parsed already)."""
    return json.loads(value) if isinstance(value, (str, bytes)) else value


def to_text(value: Any) -> Any:
    """A ``time`` column's value as ISO-8601 text (PostgreSQL returns datetimes)."""
    return value.isoformat() if isinstance(value, dt.datetime) else value


def redact(url: str) -> str:
    """The URL without any password, for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return parts._replace(netloc=netloc).geturl()


class Database:
    """What both backends offer: schema, upserts by primary key, queries."""

    backend = ""
    placeholder = "?"

    def init_schema(self) -> None:
        """Create or migrate the schema (``store.migrations``), once across processes."""
        from store.migrations import migrate

        with self.migration_lock():
            migrate(self)

    def migration_lock(self) -> AbstractContextManager[None]:
        """A transaction that only one process at a time holds."""
        raise NotImplementedError

    def upsert(self, table: Table, rows: Sequence[tuple[Any, ...]]) -> int:
        """Insert or update ``rows`` (tuples in ``table.names`` order) by primary key."""
        raise NotImplementedError

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def upsert_predictions(self, rows: Sequence[tuple[Any, ...]]) -> int:
        return self.upsert(PREDICTIONS, rows)

    def upsert_dead_letters(self, rows: Sequence[tuple[Any, ...]]) -> int:
        return self.upsert(DEAD_LETTERS, rows)

    def upsert_run(self, row: dict[str, Any]) -> None:
        """Insert a ``runs`` row or update the columns ``row`` names."""
        cols = [c for c in RUNS.names if c in row]
        updates = ", ".join(f"{c} = excluded.{c}" for c in cols if c not in RUNS.key)
        ph = self.placeholder
        self.execute(
            f"INSERT INTO runs ({', '.join(cols)}) VALUES ({', '.join([ph] * len(cols))}) "
            f"ON CONFLICT ({', '.join(RUNS.key)}) DO UPDATE SET {updates}",
            [row[c] for c in cols],
        )

    def has_table(self, name: str) -> bool:
        raise NotImplementedError


def connect(url: str, *, password_env: str = "PGPASSWORD",
            statement_timeout_ms: int = 30_000) -> Database:
    if backend_of(url) == "sqlite":
        from store.sqlite import SQLiteDatabase

        return SQLiteDatabase(url, busy_timeout_ms=max(60_000, statement_timeout_ms))
    from store.postgres import PostgresDatabase

    return PostgresDatabase(url, password_env=password_env,
                            statement_timeout_ms=statement_timeout_ms)


def connect_existing(url: str, *, password_env: str = "PGPASSWORD",
                     table: str = "tranches") -> Database | None:
    """The database if it exists and has ``table``; None otherwise. Creates nothing
    (``beamscore plan`` must not create a database file)."""
    if backend_of(url) == "sqlite" and not os.path.exists(sqlite_path(url)):
        return None
    db = connect(url, password_env=password_env)
    if not db.has_table(table):
        db.close()
        return None
    return db
