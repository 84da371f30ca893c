"""SQLite backend: the embedded default.

WAL journal, a long busy timeout and ``BEGIN IMMEDIATE`` transactions, so several local
worker processes writing the same file never see "database is locked"; upserts are one
``executemany`` of ``INSERT ... ON CONFLICT DO UPDATE`` per batch. Times are ISO-8601
text, documents JSON text.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from store.database import Database, PermanentDataError, TransientDatabaseError, sqlite_path
from store.schema import Table, one_row_per_key


class SQLiteDatabase(Database):
    backend = "sqlite"
    placeholder = "?"

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

    @contextmanager
    def _tx(self) -> Iterator[None]:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def migration_lock(self) -> AbstractContextManager[None]:
        return self._tx()

    def upsert(self, table: Table, rows: Sequence[tuple[Any, ...]]) -> int:
        rows = one_row_per_key(table, rows)
        if not rows:
            return 0
        sql = table.upsert_sql(placeholder="?")
        try:
            with self._tx():
                self.conn.executemany(sql, rows)
        except sqlite3.OperationalError as exc:
            raise TransientDatabaseError(str(exc)) from exc
        except (sqlite3.IntegrityError, sqlite3.DataError) as exc:
            raise PermanentDataError(str(exc)) from exc
        return len(rows)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            return self.conn.execute(sql, tuple(params)).fetchall()
        except sqlite3.OperationalError as exc:
            raise TransientDatabaseError(str(exc)) from exc

    def has_table(self, name: str) -> bool:
        return bool(self.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?", [name]))

    def close(self) -> None:
        self.conn.close()
