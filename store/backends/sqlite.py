"""SQLite backend: the embedded default.

WAL journal, a long busy timeout and ``BEGIN IMMEDIATE`` transactions, so several local
worker processes writing the same file never see "database is locked"; upserts are one
``executemany`` of ``INSERT ... ON CONFLICT DO UPDATE`` per batch. Times are ISO-8601
text, documents JSON text. Errors are classified by SQLite's result code: busy, locked
and I/O trouble are transient; constraint, too big and datatype mismatch reject the
values.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from store.backends.base import (
    Database,
    Fence,
    PermanentDataError,
    StatementError,
    TransientDatabaseError,
)
from store.backends.on_conflict import OnConflictDialect
from store.migrations import fencing_tokens, lease_holders_and_indexes, tables_only
from store.schema import PREDICTIONS, Table, one_row_per_key

_TRANSIENT_CODES = {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_PROTOCOL,
                    sqlite3.SQLITE_IOERR, sqlite3.SQLITE_FULL}
_DATA_CODES = {sqlite3.SQLITE_CONSTRAINT, sqlite3.SQLITE_TOOBIG, sqlite3.SQLITE_MISMATCH}


def classify_sqlite_error(exc: BaseException) -> type[Exception]:
    """The kind of a sqlite3 error, by its primary result code."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        primary = code & 0xFF  # extended codes (SQLITE_BUSY_SNAPSHOT ...) keep it
        if primary in _TRANSIENT_CODES:
            return TransientDatabaseError
        if primary in _DATA_CODES:
            return PermanentDataError
        return StatementError
    if isinstance(exc, (sqlite3.IntegrityError, sqlite3.DataError, OverflowError)):
        return PermanentDataError  # a value SQLite cannot store (an int over 64 bits)
    return StatementError


@contextmanager
def _classified() -> Iterator[None]:
    try:
        yield
    except (sqlite3.Error, OverflowError) as exc:
        raise classify_sqlite_error(exc)(str(exc)) from exc


def sqlite_path(url: str) -> str:
    """The file of a ``sqlite:///path`` URL (relative to the working directory;
    ``sqlite:////abs/path`` is absolute)."""
    return url[len("sqlite:///"):] if url.startswith("sqlite:///") else url[len("sqlite://"):]


def _affinity(declared: str) -> str:
    """A declared column type's affinity, by SQLite's rules (datatype3.html, 3.1)."""
    kind = declared.upper()
    if "INT" in kind:
        return "INTEGER"
    if any(word in kind for word in ("CHAR", "CLOB", "TEXT")):
        return "TEXT"
    if "BLOB" in kind or not kind:
        return "BLOB"
    if any(word in kind for word in ("REAL", "FLOA", "DOUB")):
        return "REAL"
    return "NUMERIC"


class SQLiteDialect(OnConflictDialect):
    name = "sqlite"
    placeholder = "?"
    types = {"text": "TEXT", "float": "DOUBLE PRECISION", "int": "BIGINT", "time": "TEXT",
             "json": "TEXT"}

    def columns(self) -> str:
        return 'SELECT name, type, "notnull" AND dflt_value IS NULL FROM pragma_table_info(?)'

    def relation_kind(self) -> str:
        # Tables and views share one namespace, case-insensitive (triggers have their own).
        return ("SELECT type FROM sqlite_master WHERE type IN ('table', 'view') "
                "AND lower(name) = lower(?)")

    def accepts(self, column_type: str, found: str) -> bool:
        """SQLite stores any value in any column, but converts it by the column's
        affinity: "007" in an INTEGER column becomes 7 (another document's id). The
        declared type must have the affinity of beamscore's own."""
        return _affinity(found) == _affinity(self.types[column_type])

    def migration(self, version: int) -> list[str]:
        return {2: self._v2, 3: tables_only, 4: lambda: fencing_tokens(self)}[version]()

    def _v2(self) -> list[str]:
        """SQLite cannot change a primary key: predictions is copied into a new table."""
        old = ", ".join(c for c in PREDICTIONS.names if c != "position")
        return [self.ddl(PREDICTIONS, name="predictions_v2")[0],
                f"INSERT INTO predictions_v2 ({old}, position) SELECT {old}, 0 FROM predictions",
                "DROP TABLE predictions",
                "ALTER TABLE predictions_v2 RENAME TO predictions",
                *lease_holders_and_indexes(self)]


class SQLiteDatabase(Database):
    dialect = SQLiteDialect()
    one_writer_at_a_time = True

    def __init__(self, url: str, busy_timeout_ms: int = 60_000):
        path = sqlite_path(url)
        if not path:
            raise ValueError(f"sqlite URL needs a path: {url!r}")
        self.path = path
        try:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            self.conn = sqlite3.connect(path, timeout=busy_timeout_ms / 1000,
                                        isolation_level=None, check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise ValueError(
                f"cannot open the SQLite database {os.path.abspath(path)} (db {url}): {exc}. "
                "sqlite:///relative/path is relative to the working directory, "
                "sqlite:////absolute/path is absolute") from exc
        self.conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        self.conn.execute("PRAGMA journal_mode = WAL")
        self.conn.execute("PRAGMA synchronous = NORMAL")

    @classmethod
    def open(cls, url: str, *, password_env: str, statement_timeout_ms: int) -> Database:
        return cls(url, busy_timeout_ms=max(60_000, statement_timeout_ms))

    @classmethod
    def identity(cls, url: str) -> str:
        return "sqlite:" + os.path.abspath(sqlite_path(url))

    @classmethod
    def exists(cls, url: str) -> bool:
        return os.path.exists(sqlite_path(url))

    @contextmanager
    def _tx(self) -> Iterator[None]:
        if self.conn.in_transaction:  # inside ``exclusively``: its transaction is this one
            yield
            return
        with _classified():
            self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            if self.conn.in_transaction:  # SQLite may have rolled back already
                self.conn.execute("ROLLBACK")
            raise
        with _classified():
            self.conn.execute("COMMIT")

    def migration_lock(self) -> AbstractContextManager[None]:
        return self._tx()

    def exclusively(self, key: str) -> AbstractContextManager[None]:
        return self._tx()  # BEGIN IMMEDIATE: the database's one writer, whatever the key

    def upsert(self, table: Table, rows: Sequence[tuple[Any, ...]],
               fence: Fence | None = None) -> int:
        rows = one_row_per_key(table, rows)
        if not rows:
            return 0
        sql = self.dialect.upsert(table)
        with self._tx():  # BEGIN IMMEDIATE: no takeover between the check and the write
            self.check_fence(fence, table, rows)
            with _classified():
                self.conn.executemany(sql, rows)
        return len(rows)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with _classified():
            return self.conn.execute(sql, tuple(params)).fetchall()

    def execute_count(self, sql: str, params: Sequence[Any] = ()) -> int:
        with _classified():
            return self.conn.execute(sql, tuple(params)).rowcount

    def has_table(self, name: str) -> bool:
        return bool(self.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?", [name]))

    def close(self) -> None:
        self.conn.close()
