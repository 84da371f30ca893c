"""SQLite backend: the embedded default.

WAL journal, a long busy timeout and ``BEGIN IMMEDIATE`` transactions, so several local
worker processes writing the same file never see "database is locked"; upserts are one
``executemany`` of ``INSERT ... ON CONFLICT DO UPDATE`` per batch.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from store.database import Database, PermanentDataError, TransientDatabaseError, sqlite_path
from store.schema import SCHEMA_VERSION, TABLES, Table, keep_last_per_key


class SQLiteDatabase(Database):
    backend = "sqlite"
    placeholder = "?"

    def __init__(self, url: str, busy_timeout_ms: int = 60_000):
        path = sqlite_path(url)
        if not path:
            raise ValueError(f"sqlite URL needs a path: {url!r}")
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.path = path
        self.conn = sqlite3.connect(path, timeout=busy_timeout_ms / 1000, isolation_level=None,
                                    check_same_thread=False)
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

    def init_schema(self) -> None:
        with self._tx():
            self.conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            current = self.conn.execute("SELECT max(version) FROM schema_version").fetchone()[0]
            for table in TABLES:
                for ddl in table.ddl(self.backend):
                    self.conn.execute(ddl)
            if current is None or current < SCHEMA_VERSION:
                self.conn.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))

    def upsert(self, table: Table, rows: Sequence[tuple[Any, ...]]) -> int:
        rows = keep_last_per_key(table, rows)
        if not rows:
            return 0
        cols = table.names
        updates = ", ".join(f"{c} = excluded.{c}" for c in cols if c not in table.key)
        sql = (f"INSERT INTO {table.name} ({', '.join(cols)}) "
               f"VALUES ({', '.join('?' * len(cols))}) "
               f"ON CONFLICT ({', '.join(table.key)}) DO UPDATE SET {updates}")
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
