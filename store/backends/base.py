"""What every backend offers, and the three kinds of database error.

A backend subclasses ``Database``: it opens a connection for a URL, runs statements,
upserts batches by primary key and holds the migration lock; its ``dialect`` writes
the SQL. Everything else here (the schema, the single-row upsert, updates) is built
from those. Every error a backend raises is one of:

- ``TransientDatabaseError``: the connection, the server or another transaction is in
  the way; the same statement may succeed later (the session retries it).
- ``PermanentDataError``: the database rejects these values; retrying cannot help (the
  sink dead-letters the rows, with the database's message).
- ``StatementError``: the statement does not fit this database (an unknown table, no
  privilege): a bug or a misconfiguration, neither retried nor blamed on the rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, ClassVar
from urllib.parse import urlsplit

from store.backends.dialect import Dialect
from store.migrations import migrate
from store.schema import DEAD_LETTERS, PREDICTIONS, RUNS, Table


class TransientDatabaseError(Exception):
    """Worth retrying: connection lost, server restart, lock or statement timeout."""


class PermanentDataError(Exception):
    """The database rejects these values; retrying cannot help."""


class StatementError(RuntimeError):
    """The statement is wrong for this database; not the values' fault, not retried."""


def redact(url: str) -> str:
    """The URL without any password, for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return parts._replace(netloc=netloc).geturl()


class Database:
    """One connection to one database: schema, upserts by primary key, queries."""

    dialect: ClassVar[Dialect]

    @classmethod
    def open(cls, url: str, *, password_env: str, statement_timeout_ms: int) -> Database:
        """A connection for ``url`` with the sink's settings."""
        raise NotImplementedError

    @classmethod
    def identity(cls, url: str) -> str:
        """What makes two URLs the same database (user names and options do not count)."""
        raise NotImplementedError

    @classmethod
    def exists(cls, url: str) -> bool:
        """False when opening ``url`` would create the database."""
        return True

    @property
    def placeholder(self) -> str:
        return self.dialect.placeholder

    def init_schema(self) -> None:
        """Create or migrate the schema (``store.migrations``), once across processes."""
        with self.migration_lock():
            migrate(self.execute, self.dialect)

    def migration_lock(self) -> AbstractContextManager[None]:
        """A transaction that only one process at a time holds."""
        raise NotImplementedError

    def upsert(self, table: Table, rows: Sequence[tuple[Any, ...]]) -> int:
        """Insert or update ``rows`` (tuples in ``table.names`` order) by primary key."""
        raise NotImplementedError

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one statement; the rows it returns (none for a statement without)."""
        raise NotImplementedError

    def execute_count(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement that changes rows; how many it changed."""
        raise NotImplementedError

    def has_table(self, name: str) -> bool:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def upsert_predictions(self, rows: Sequence[tuple[Any, ...]]) -> int:
        return self.upsert(PREDICTIONS, rows)

    def upsert_dead_letters(self, rows: Sequence[tuple[Any, ...]]) -> int:
        return self.upsert(DEAD_LETTERS, rows)

    def upsert_run(self, row: dict[str, Any]) -> None:
        """Insert a ``runs`` row or update the columns ``row`` names."""
        self.upsert_values(RUNS, row)

    def upsert_values(self, table: Table, row: Mapping[str, Any], only_if: str = "",
                      params: Sequence[Any] = ()) -> None:
        """Insert one row of the columns ``row`` names, or update them in the stored
        row of its key where the condition ``only_if`` on the stored row holds
        (``params``: its parameters)."""
        cols = [c for c in table.names if c in row]
        self.execute(self.dialect.upsert(table, cols, only_if=only_if),
                     [*(row[c] for c in cols), *params])

    def update(self, table: Table, values: Mapping[str, Any],
               where: Mapping[str, Any]) -> int:
        """Set ``values`` in the rows whose columns equal ``where``; how many rows."""
        return self.execute_count(self.dialect.update(table, list(values), list(where)),
                                  [*values.values(), *where.values()])
