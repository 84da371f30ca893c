"""PostgreSQL backend (psycopg 3): the production database.

Bulk path: a batch's keys are de-duplicated in Python, then COPY goes straight into
the table in one transaction. If a key already exists (unique violation: a rerun or a
retried bundle) that transaction rolls back and the batch goes through a temporary
staging table and one ``INSERT ... SELECT ... ON CONFLICT DO UPDATE`` instead, and the
connection skips the COPY attempt for its next 1, 2, 4 ... 64 batches. ``writes``
counts the path each batch took. Times are ``timestamptz``, documents ``jsonb``.
SQLSTATEs are classified as transient (retry) or
permanent (classes 22 and 23: the sink dead-letters those rows).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

from store.database import Database, PermanentDataError, TransientDatabaseError, redact
from store.schema import Table, one_row_per_key

# SQLSTATE classes/codes worth retrying: connection exceptions (08), operator
# intervention incl. 57P01 admin shutdown (57), serialization failure and deadlock
# (40001, 40P01), insufficient resources incl. too many connections (53), lock timeout
# (55P03), query canceled by statement_timeout (57014, in class 57).
_TRANSIENT_PREFIXES = ("08", "57", "40001", "40P01", "53", "55P03")
_PERMANENT_PREFIXES = ("22", "23")
_MIGRATION_LOCK = 7466342  # advisory lock: one migrator at a time


def classify_pg_error(exc: BaseException) -> type[Exception]:
    import psycopg

    state = getattr(exc, "sqlstate", None) or ""
    if state.startswith(_PERMANENT_PREFIXES):
        return PermanentDataError
    if state.startswith(_TRANSIENT_PREFIXES) or isinstance(exc, psycopg.OperationalError):
        return TransientDatabaseError
    return RuntimeError


class PostgresDatabase(Database):
    backend = "postgresql"
    placeholder = "%s"

    def __init__(self, url: str, password_env: str = "PGPASSWORD",
                 statement_timeout_ms: int = 30_000, application_name: str = "beamscore"):
        import psycopg

        parts = urlsplit(url)
        if parts.password is not None:
            raise ValueError("the database URL must not contain a password; use "
                             f"the environment variable {password_env}")
        kwargs: dict[str, Any] = {
            "application_name": application_name,
            "options": f"-c statement_timeout={int(statement_timeout_ms)} "
                       f"-c lock_timeout={int(statement_timeout_ms)}",
            "connect_timeout": 10,
        }
        password = os.environ.get(password_env)
        if password:
            kwargs["password"] = password
        conninfo = parts._replace(scheme="postgresql").geturl()
        self.writes: Counter[tuple[str, str]] = Counter()  # (table, copy|conflict|upsert)
        self._staging: set[str] = set()
        self._skip_copy: dict[str, int] = {}  # batches left to upsert without trying COPY
        self._skip_run: dict[str, int] = {}   # length of the current skip after a conflict
        try:
            self.conn = psycopg.connect(conninfo, autocommit=True, **kwargs)
        except psycopg.Error as exc:
            raise classify_pg_error(exc)(f"cannot connect to {redact(url)}: {exc}") from exc

    @contextmanager
    def migration_lock(self) -> Iterator[None]:
        with self.conn.transaction():
            self.conn.execute("SELECT pg_advisory_xact_lock(%s)", [_MIGRATION_LOCK])
            yield

    def upsert(self, table: Table, rows: Sequence[tuple[Any, ...]]) -> int:
        rows = one_row_per_key(table, rows)
        if not rows:
            return 0
        import psycopg

        try:
            if self._skip_copy.get(table.name, 0) > 0:
                self._skip_copy[table.name] -= 1
            elif self._copy_new(table, rows):
                return len(rows)
            self._stage_and_upsert(table, rows)
        except psycopg.Error as exc:
            raise classify_pg_error(exc)(f"{type(exc).__name__}: {exc}") from exc
        return len(rows)

    def _copy_new(self, table: Table, rows: Sequence[tuple[Any, ...]]) -> bool:
        """Fast path: COPY straight into the table, right when no key exists yet. False
        if some key exists: the transaction rolled back and nothing was written."""
        import psycopg

        try:
            with self.conn.transaction(), self.conn.cursor() as cur:
                _copy_rows(cur, table.name, table.names, rows)
        except psycopg.errors.UniqueViolation:
            self.writes[(table.name, "conflict")] += 1
            self._skip_run[table.name] = min(64, 2 * self._skip_run.get(table.name, 0) or 1)
            self._skip_copy[table.name] = self._skip_run[table.name]
            return False
        self.writes[(table.name, "copy")] += 1
        self._skip_run[table.name] = 0
        return True

    def _stage_and_upsert(self, table: Table, rows: Sequence[tuple[Any, ...]]) -> None:
        """COPY into a temporary staging table, then INSERT ... ON CONFLICT DO UPDATE."""
        stage = f"_stage_{table.name}"
        with self.conn.transaction():
            if stage not in self._staging:
                # Created in this transaction: it disappears if the transaction rolls
                # back, so it is remembered only after the commit below.
                self.conn.execute(
                    f"CREATE TEMP TABLE IF NOT EXISTS {stage} "  # type: ignore[arg-type]
                    f"(LIKE {table.name} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS")
            with self.conn.cursor() as cur:
                _copy_rows(cur, stage, table.names, rows)
                # Keys are unique here (de-duplicated above), so ON CONFLICT never meets
                # the same key twice in one statement.
                cur.execute(table.upsert_sql(  # type: ignore[arg-type]
                    f"SELECT {', '.join(table.names)} FROM {stage}", collate="C"))
        self._staging.add(stage)
        self.writes[(table.name, "upsert")] += 1

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        import psycopg

        try:
            cur = self.conn.execute(sql, tuple(params))  # type: ignore[arg-type]
            return cur.fetchall() if cur.description else []
        except psycopg.Error as exc:
            raise classify_pg_error(exc)(f"{type(exc).__name__}: {exc}") from exc

    def has_table(self, name: str) -> bool:
        rows = self.execute("SELECT to_regclass(%s)", [name])
        return bool(rows and rows[0][0] is not None)

    def close(self) -> None:
        self.conn.close()


def _copy_rows(cur: Any, table: str, cols: Sequence[str],
               rows: Sequence[tuple[Any, ...]]) -> None:
    with cur.copy(f"COPY {table} ({', '.join(cols)}) FROM STDIN") as copy:
        for r in rows:
            copy.write_row(r)
