"""Database backends for results, dead letters, runs and the tranche ledger.

``connect(url)`` returns a ``Database`` for ``sqlite:///path`` or
``postgresql://user@host:port/db`` (password from the environment variable named by
``password_env``, never from the URL or config). Both backends create and migrate a
versioned schema (``schema_version`` table) and offer the same idempotent writes:
predictions are upserted on (doc_id, model_name, model_version), dead letters on
(run_id, source_file, position, stage), runs on run_id.

PostgreSQL bulk path: de-duplicate keys in Python, then COPY straight into the table
in one transaction per batch; if a key already exists (unique violation: a rerun or a
retried bundle) that transaction rolls back and the batch goes through a temporary
staging table and one INSERT ... SELECT ... ON CONFLICT DO UPDATE instead (figures in
README, bench/sink_bench.py). SQLite path: executemany in
one transaction, WAL journal and a busy timeout so local workers never hit "database
is locked". Errors are classified as transient (retry) or permanent (dead-letter).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence
from operator import itemgetter
from typing import Any
from urllib.parse import urlsplit

SCHEMA_VERSION = 1

PREDICTION_COLUMNS = (
    "doc_id", "tranche", "label", "score", "top_k", "model_name", "model_version",
    "model_sha256", "run_id", "scored_at", "source_file", "metadata",
)
DEAD_LETTER_COLUMNS = (
    "run_id", "tranche", "source_file", "position", "stage", "reason", "payload",
)
RUN_COLUMNS = ("run_id", "started_at", "finished_at", "status", "config", "model", "counts")

_DDL = {
    "predictions": """
        CREATE TABLE IF NOT EXISTS predictions (
            doc_id TEXT NOT NULL, tranche TEXT NOT NULL, label TEXT NOT NULL,
            score DOUBLE PRECISION NOT NULL, top_k TEXT NOT NULL,
            model_name TEXT NOT NULL, model_version TEXT NOT NULL, model_sha256 TEXT NOT NULL,
            run_id TEXT NOT NULL, scored_at TEXT NOT NULL, source_file TEXT NOT NULL,
            metadata TEXT,
            PRIMARY KEY (doc_id, model_name, model_version))""",
    "dead_letters": """
        CREATE TABLE IF NOT EXISTS dead_letters (
            run_id TEXT NOT NULL, tranche TEXT NOT NULL, source_file TEXT NOT NULL,
            position BIGINT NOT NULL, stage TEXT NOT NULL, reason TEXT NOT NULL,
            payload TEXT NOT NULL,
            PRIMARY KEY (run_id, source_file, position, stage))""",
    "runs": """
        CREATE TABLE IF NOT EXISTS runs (
            run_id TEXT PRIMARY KEY, started_at TEXT NOT NULL, finished_at TEXT,
            status TEXT NOT NULL, config TEXT NOT NULL, model TEXT NOT NULL, counts TEXT)""",
    "tranches": """
        CREATE TABLE IF NOT EXISTS tranches (
            tranche TEXT NOT NULL, model_name TEXT NOT NULL, model_version TEXT NOT NULL,
            fingerprint TEXT NOT NULL, files TEXT NOT NULL, run_id TEXT NOT NULL,
            status TEXT NOT NULL, counts TEXT, lease_until DOUBLE PRECISION,
            started_at TEXT NOT NULL, finished_at TEXT,
            PRIMARY KEY (tranche, model_name, model_version))""",
}


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


def redact(url: str) -> str:
    """The URL without any password, for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return parts._replace(netloc=netloc).geturl()


class Database:
    """Common interface of the two backends."""

    backend = ""

    def init_schema(self) -> None:
        raise NotImplementedError

    def upsert_predictions(self, rows: Sequence[tuple[Any, ...]]) -> int:
        raise NotImplementedError

    def upsert_dead_letters(self, rows: Sequence[tuple[Any, ...]]) -> int:
        raise NotImplementedError

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def upsert_run(self, row: dict[str, Any]) -> None:
        cols = [c for c in RUN_COLUMNS if c in row]
        updates = ", ".join(f"{c} = excluded.{c}" for c in cols if c != "run_id")
        ph = self.placeholder
        self.execute(
            f"INSERT INTO runs ({', '.join(cols)}) VALUES ({', '.join([ph] * len(cols))}) "
            f"ON CONFLICT (run_id) DO UPDATE SET {updates}",
            [row[c] for c in cols],
        )

    placeholder = "?"


def dedupe_last(rows: Sequence[tuple[Any, ...]],
                key_idx: tuple[int, ...] = (0, 5, 6)) -> list[tuple[Any, ...]]:
    """Keep the last row per key: one statement must not hit the same key twice."""
    if isinstance(rows, list) and len(set(map(itemgetter(key_idx[0]), rows))) == len(rows):
        return rows  # the first key column alone is unique: so is the whole key (hot path)
    unique = {tuple(r[i] for i in key_idx): r for r in rows}
    return list(unique.values())


# ------------------------------------------------------------------------ SQLite
class SQLiteDatabase(Database):
    backend = "sqlite"
    placeholder = "?"

    def __init__(self, url: str, busy_timeout_ms: int = 60_000):
        path = url[len("sqlite:///"):] if url.startswith("sqlite:///") else url[len("sqlite://"):]
        if not path:
            raise ValueError(f"sqlite URL needs a path: {url!r}")
        parent = os.path.dirname(os.path.abspath(path))
        os.makedirs(parent, exist_ok=True)
        self.path = path
        self.conn = sqlite3.connect(path, timeout=busy_timeout_ms / 1000, isolation_level=None,
                                    check_same_thread=False)
        self.conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        self.conn.execute("PRAGMA journal_mode = WAL")
        self.conn.execute("PRAGMA synchronous = NORMAL")

    def init_schema(self) -> None:
        with self._tx():
            self.conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)"
            )
            current = self.conn.execute("SELECT max(version) FROM schema_version").fetchone()[0]
            for ddl in _DDL.values():
                self.conn.execute(ddl)
            if current is None or current < SCHEMA_VERSION:
                self.conn.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))

    def _tx(self) -> Any:
        db = self

        class _Tx:
            def __enter__(self) -> None:
                db.conn.execute("BEGIN IMMEDIATE")

            def __exit__(self, exc_type: Any, *_: Any) -> None:
                db.conn.execute("ROLLBACK" if exc_type else "COMMIT")

        return _Tx()

    def _upsert(self, table: str, cols: Sequence[str], key: Sequence[str],
                rows: Sequence[tuple[Any, ...]]) -> int:
        if not rows:
            return 0
        updates = ", ".join(f"{c} = excluded.{c}" for c in cols if c not in key)
        sql = (
            f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) "
            f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates}"
        )
        try:
            with self._tx():
                self.conn.executemany(sql, rows)
        except sqlite3.OperationalError as exc:
            raise TransientDatabaseError(str(exc)) from exc
        except (sqlite3.IntegrityError, sqlite3.DataError) as exc:
            raise PermanentDataError(str(exc)) from exc
        return len(rows)

    def upsert_predictions(self, rows: Sequence[tuple[Any, ...]]) -> int:
        return self._upsert("predictions", PREDICTION_COLUMNS,
                            ("doc_id", "model_name", "model_version"), dedupe_last(rows))

    def upsert_dead_letters(self, rows: Sequence[tuple[Any, ...]]) -> int:
        return self._upsert("dead_letters", DEAD_LETTER_COLUMNS,
                            ("run_id", "source_file", "position", "stage"),
                            dedupe_last(rows, key_idx=(0, 2, 3, 4)))

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            cur = self.conn.execute(sql, tuple(params))
            return cur.fetchall()
        except sqlite3.OperationalError as exc:
            raise TransientDatabaseError(str(exc)) from exc

    def close(self) -> None:
        self.conn.close()


# -------------------------------------------------------------------- PostgreSQL
# SQLSTATE classes/codes worth retrying: connection exceptions (08), operator
# intervention incl. 57P01 admin shutdown (57), serialization failure and deadlock
# (40001, 40P01), too many connections (53300), lock timeout (55P03), query canceled
# by statement_timeout (57014, in class 57).
_TRANSIENT_PREFIXES = ("08", "57", "40001", "40P01", "53300", "53", "55P03")
_PERMANENT_PREFIXES = ("22", "23")


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
        self._staging: set[str] = set()
        self._skip_fast: dict[str, int] = {}     # batches left to upsert without trying COPY
        self._conflict_run: dict[str, int] = {}  # length of the current skip after a conflict
        try:
            self.conn = psycopg.connect(conninfo, autocommit=True, **kwargs)
        except psycopg.Error as exc:
            raise classify_pg_error(exc)(f"cannot connect to {redact(url)}: {exc}") from exc

    def init_schema(self) -> None:
        with self.conn.transaction():
            # One migrator at a time, even with many workers starting together.
            self.conn.execute("SELECT pg_advisory_xact_lock(7466342)")
            self.conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)"
            )
            row = self.conn.execute("SELECT max(version) FROM schema_version").fetchone()
            current = row[0] if row else None
            for ddl in _DDL.values():
                self.conn.execute(ddl)  # type: ignore[arg-type]
            if current is None or current < SCHEMA_VERSION:
                self.conn.execute("INSERT INTO schema_version VALUES (%s)", (SCHEMA_VERSION,))

    def _copy_upsert(self, table: str, cols: Sequence[str], key: Sequence[str],
                     rows: Sequence[tuple[Any, ...]]) -> int:
        if not rows:
            return 0
        import psycopg

        try:
            if self._skip_fast.get(table, 0) > 0:
                self._skip_fast[table] -= 1
            elif self._copy_new(table, cols, rows):
                return len(rows)
            self._stage_and_upsert(table, cols, key, rows)
        except psycopg.Error as exc:
            raise classify_pg_error(exc)(f"{type(exc).__name__}: {exc}") from exc
        return len(rows)

    def _copy_new(self, table: str, cols: Sequence[str], rows: Sequence[tuple[Any, ...]]) -> bool:
        """Fast path: COPY straight into ``table``, right when no key exists yet (a new
        tranche, 2.0-2.3x the staged upsert here). False if some key exists (a rerun, a
        retried bundle): the transaction rolled back, nothing was written, and the
        next batches of this session skip the attempt (1, 2, 4 ... 64 of them)."""
        import psycopg

        try:
            with self.conn.transaction(), self.conn.cursor() as cur:
                _copy_rows(cur, table, cols, rows)
        except psycopg.errors.UniqueViolation:
            self._conflict_run[table] = min(64, 2 * self._conflict_run.get(table, 0) or 1)
            self._skip_fast[table] = self._conflict_run[table]
            return False
        self._conflict_run[table] = 0
        return True

    def _stage_and_upsert(self, table: str, cols: Sequence[str], key: Sequence[str],
                          rows: Sequence[tuple[Any, ...]]) -> None:
        """COPY into a temporary staging table, then INSERT ... ON CONFLICT DO UPDATE."""
        stage = f"_stage_{table}"
        col_list = ", ".join(cols)
        updates = ", ".join(f"{c} = excluded.{c}" for c in cols if c not in key)
        with self.conn.transaction():
            if stage not in self._staging:
                # Created in this transaction: it disappears if the transaction rolls
                # back, so it is remembered only after the commit below.
                self.conn.execute(
                    f"CREATE TEMP TABLE IF NOT EXISTS {stage} "  # type: ignore[arg-type]
                    f"(LIKE {table} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
                )
            with self.conn.cursor() as cur:
                _copy_rows(cur, stage, cols, rows)
                # Keys are unique here (deduplicated by the caller), so no DISTINCT ON
                # sort: ON CONFLICT never meets the same key twice in one statement.
                cur.execute(
                    f"INSERT INTO {table} ({col_list}) "  # type: ignore[arg-type]
                    f"SELECT {col_list} FROM {stage} "
                    f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates}"
                )
        self._staging.add(stage)

    def upsert_predictions(self, rows: Sequence[tuple[Any, ...]]) -> int:
        return self._copy_upsert("predictions", PREDICTION_COLUMNS,
                                 ("doc_id", "model_name", "model_version"), dedupe_last(rows))

    def upsert_dead_letters(self, rows: Sequence[tuple[Any, ...]]) -> int:
        return self._copy_upsert("dead_letters", DEAD_LETTER_COLUMNS,
                                 ("run_id", "source_file", "position", "stage"),
                                 dedupe_last(rows, key_idx=(0, 2, 3, 4)))

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        import psycopg

        try:
            cur = self.conn.execute(sql, tuple(params))  # type: ignore[arg-type]
            return cur.fetchall() if cur.description else []
        except psycopg.Error as exc:
            raise classify_pg_error(exc)(f"{type(exc).__name__}: {exc}") from exc

    def close(self) -> None:
        self.conn.close()


def _copy_rows(cur: Any, table: str, cols: Sequence[str],
               rows: Sequence[tuple[Any, ...]]) -> None:
    with cur.copy(f"COPY {table} ({', '.join(cols)}) FROM STDIN") as copy:
        for r in rows:
            copy.write_row(r)


def connect(url: str, *, password_env: str = "PGPASSWORD",
            statement_timeout_ms: int = 30_000) -> Database:
    if backend_of(url) == "sqlite":
        return SQLiteDatabase(url, busy_timeout_ms=max(60_000, statement_timeout_ms))
    return PostgresDatabase(url, password_env=password_env,
                            statement_timeout_ms=statement_timeout_ms)
