"""PostgreSQL backend (psycopg 3): the production database.

Bulk path: a batch's keys are de-duplicated in Python, then COPY, in the binary
format (``store.backends.pg_copy``), goes straight into the table in one transaction.
If a key already exists (unique violation: a rerun or a retried bundle) that
transaction rolls back and the batch goes through a temporary staging table and one
``INSERT ... SELECT ... ON CONFLICT DO UPDATE`` instead, and the connection skips the
COPY attempt for its next 1, 2, 4 ... 64 batches. ``writes`` counts the path each batch
took. Times are ``timestamptz``, documents ``jsonb``.

Errors are classified by SQLSTATE, never by message text (``classify_pg_error``),
except where psycopg gives none: a connection the server refuses for its role, password
or database is ``AccessDenied`` (``refused_access``), connection options libpq refuses
before trying a server (``sslmode=bogus``, ``service=nosuch``) are
``BadConnectionOptions``; neither is transient.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any
from urllib.parse import urlsplit

from store.backends.base import (
    AccessDenied,
    BadConnectionOptions,
    Database,
    DatabaseUnreachable,
    Fence,
    PermanentDataError,
    StatementError,
    TransientDatabaseError,
    redact,
)
from store.backends.on_conflict import OnConflictDialect
from store.migrations import fencing_tokens, lease_holders_and_indexes, tables_only
from store.schema import DEAD_LETTERS, PREDICTIONS, RUNS, TRANCHES, Table, one_row_per_key

# SQLSTATE classes and codes, the longest prefix deciding. Transient: the server away
# (DatabaseUnreachable: connection exceptions (08), too many connections (53300), admin
# or crash shutdown and cannot connect now (57P01, 57P02, 57P03)); serialization failure
# and deadlock (40001, 40P01), other insufficient resources such as a full disk (53), a
# transaction left idle past the server's limit (25P03), lock not available (55P03),
# query canceled by statement_timeout (57014). A protocol violation (08P01) is
# beamscore's binary COPY not fitting the table's column types: a StatementError, never
# waited for. Permanent data errors: data exceptions (22), integrity constraints (23),
# program limits such as "index row size exceeds" (54), datatype mismatch (42804).
# Any other SQLSTATE (a syntax error, an unknown table, no privilege) is a StatementError:
# a bug or a misconfiguration, never blamed on the rows.
_SQLSTATES: dict[str, type[Exception]] = {
    **dict.fromkeys(("08", "53300", "57P01", "57P02", "57P03"), DatabaseUnreachable),
    **dict.fromkeys(("25P03", "40001", "40P01", "53", "55P03", "57014"),
                    TransientDatabaseError),
    "08P01": StatementError,  # a protocol violation: data the table cannot take (COPY)
    **dict.fromkeys(("22", "23", "54", "42804"), PermanentDataError),
}
# A connection refused for its role (28000: no such role, not allowed to log in, no
# pg_hba.conf entry, a failed non-password authentication), its password (28P01) or its
# database (3D000): a misconfiguration, never worth a retry.
_REFUSALS = {"28000": "the server does not let role {user!r} in (no such role, or one it "
                      "refuses to log in here)",
             "28P01": "password authentication failed for role {user!r}: check the password "
                      "in the environment variable {env}",
             "3D000": "database {db!r} does not exist"}
# psycopg 3 (3.3, libpq 18) raises a refused connection as an OperationalError whose
# sqlstate, diag.sqlstate and pgresult are all None: libpq keeps the server's SQLSTATE
# to itself during the connection (it only feeds PQping, which answers "up" for these
# and for a transient "too many connections" alike). So, when no SQLSTATE is given, the
# narrowest signals left are used: libpq's "needs password" flag (the server asked for
# a password and none was set: 28P01), and the server's own FATAL line for the three
# refusals, worded so since PostgreSQL 9 (postinit.c, auth.c). A server whose
# lc_messages words them in another language gets the transient default (exit 75 after
# the connect window); a refused connection never matches a down server's message.
_REFUSAL_LINES = (
    ("3D000", re.compile(r'database "[^"]*" does not exist')),
    ("28P01", re.compile(r'password authentication failed for user "')),
    ("28000", re.compile(r'role "[^"]*" (does not exist|is not permitted to log in)'
                         r'|no pg_hba\.conf entry for host|pg_hba\.conf rejects connection'
                         # not LDAP, RADIUS or PAM: their failures include an
                         # unreachable authentication server, which is transient
                         r'|(Ident|Peer|GSSAPI|SSPI|certificate) authentication failed '
                         r'for user "')),
)
# How libpq starts the error of a server it tried to reach (since libpq 14; before:
# "could not connect to server"): any other error of PQconnectStart is the options'.
_SERVER_TRIED = ("connection to server ", "could not connect to server")
_MIGRATION_LOCK = 7466342  # advisory lock: one migrator at a time


def classify_pg_error(exc: BaseException) -> type[Exception]:
    """The kind of a psycopg error: by its SQLSTATE; an error without one was raised
    by the client: connection options it refused before trying any server
    (``BadConnectionOptions``), a connection that broke or closed, a value it cannot
    send."""
    import psycopg

    state = getattr(exc, "sqlstate", None)
    if state:
        for length in (5, 2):
            if state[:length] in _SQLSTATES:
                return _SQLSTATES[state[:length]]
        return StatementError
    if _options_refused(exc):
        return BadConnectionOptions
    if isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError)):
        return DatabaseUnreachable  # refused, broken or closed by the client
    if isinstance(exc, psycopg.DataError):
        return PermanentDataError  # e.g. a NUL character in text
    return StatementError


def _startup_sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a refused connection: the error's own if psycopg gives one, else
    read from the signals above; None for any other failure (a server that is down)."""
    diag = getattr(exc, "diag", None)
    state = getattr(exc, "sqlstate", None) or getattr(diag, "sqlstate", None)
    if state:
        return state if state in _REFUSALS else None
    pgconn = getattr(exc, "pgconn", None)
    if getattr(pgconn, "needs_password", False):
        return "28P01"
    text = str(exc)
    return next((code for code, line in _REFUSAL_LINES if line.search(text)), None)


def _options_refused(exc: BaseException) -> bool:
    """Whether libpq refused the connection options themselves, before trying any
    server: its PQconnectStart failed (psycopg's error then carries the connection it
    never polled, status BAD) with an error that is not about a server it tried (libpq
    starts those with the server it tried: a missing Unix socket fails there too)."""
    from psycopg import pq

    pgconn = getattr(exc, "pgconn", None)
    if not isinstance(pgconn, pq.PGconn) or pgconn.status != pq.ConnStatus.BAD:
        return False
    return not _text(pgconn.error_message).lstrip().startswith(_SERVER_TRIED)


def _problem(exc: BaseException) -> str:
    """libpq's own line for a refused option (``invalid sslmode value: "x"``)."""
    pgconn = getattr(exc, "pgconn", None)
    text = _text(getattr(pgconn, "error_message", b"")) or str(exc)
    return " ".join(text.split())


def refused_access(exc: BaseException, url: str, password_env: str) -> AccessDenied | None:
    """``AccessDenied`` naming what is wrong when the server refused to connect ``url``
    for its role, password or database; None for any other connection error."""
    state = _startup_sqlstate(exc)
    if state is None:
        return None
    parts = urlsplit(url)
    pgconn = getattr(exc, "pgconn", None)
    user = parts.username or _text(getattr(pgconn, "user", b"")) or "(default)"
    db = parts.path.lstrip("/") or _text(getattr(pgconn, "db", b"")) or user
    what = _REFUSALS[state].format(user=user, db=db, env=password_env)
    if state == "28P01" and getattr(pgconn, "needs_password", False):
        what = (f"the server asks a password of role {user!r} and the environment "
                f"variable {password_env} holds none")
    server = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
    return AccessDenied(f"cannot connect to {redact(url)}: {what} (SQLSTATE {state}; not "
                        f"retried, waiting cannot fix it): {server}")


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value or "")


class PostgresDialect(OnConflictDialect):
    name = "postgresql"
    placeholder = "%s"
    row_lock = " FOR SHARE"  # a takeover's UPDATE of the lease waits for the write
    types = {"text": "TEXT", "float": "DOUBLE PRECISION", "int": "BIGINT",
             "time": "TIMESTAMPTZ", "json": "JSONB"}
    # A binary COPY is read by each column's own type: a stricter varchar takes text's
    # bytes (and rejects a value too long, a data error), a text column jsonb's wrongly.
    type_names = {"text": ("text", "character varying"), "float": ("double precision",),
                  "int": ("bigint",), "time": ("timestamp with time zone",),
                  "json": ("jsonb",)}
    code_point_collation = "C"

    def columns(self) -> str:
        return ("SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull AND "
                "NOT a.atthasdef AND a.attidentity = '' AND a.attgenerated = '' FROM "
                "pg_attribute a WHERE a.attrelid = (SELECT c.oid FROM pg_class c WHERE "
                "c.relname = %s AND c.relkind IN ('r', 'p') AND pg_table_is_visible(c.oid)) "
                "AND a.attnum > 0 AND NOT a.attisdropped")

    def relation_kind(self) -> str:
        # The first relation of that name on the search path, as an unqualified name finds.
        return ("SELECT CASE c.relkind WHEN 'r' THEN 'table' WHEN 'p' THEN 'table' "
                "WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view' WHEN 'f' THEN "
                "'foreign table' WHEN 'S' THEN 'sequence' WHEN 'i' THEN 'index' "
                "ELSE 'relation of kind ' || c.relkind::text END || ' in schema ' || n.nspname "
                "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE c.relname = %s AND pg_table_is_visible(c.oid)")

    def accepts(self, column_type: str, found: str) -> bool:
        return found.partition("(")[0] in self.type_names[column_type]

    def indexes(self, table: Table) -> tuple[tuple[str, ...], ...]:
        return table.indexes + table.server_indexes

    def migration(self, version: int) -> list[str]:
        return {2: self._v2, 3: tables_only, 4: lambda: fencing_tokens(self)}[version]()

    def _v2(self) -> list[str]:
        steps = ["ALTER TABLE predictions ADD COLUMN position BIGINT NOT NULL DEFAULT 0",
                 "ALTER TABLE predictions ALTER COLUMN position DROP DEFAULT",
                 "ALTER TABLE predictions DROP CONSTRAINT predictions_pkey",
                 f"ALTER TABLE predictions ADD PRIMARY KEY ({', '.join(PREDICTIONS.key)})"]
        for table in (PREDICTIONS, DEAD_LETTERS, RUNS, TRANCHES):
            for c in table.columns:
                if c.type == "time":
                    # Version 1 wrote ISO-8601 text; '' stood for "unknown".
                    steps.append(f"ALTER TABLE {table.name} ALTER COLUMN {c.name} TYPE "
                                 f"timestamptz USING CASE WHEN {c.name} = '' THEN now() "
                                 f"ELSE {c.name}::timestamptz END")
                elif c.type == "json":
                    steps.append(f"ALTER TABLE {table.name} ALTER COLUMN {c.name} TYPE jsonb "
                                 f"USING {c.name}::jsonb")
        return steps + lease_holders_and_indexes(self)


class PostgresDatabase(Database):
    dialect = PostgresDialect()

    def __init__(self, url: str, password_env: str = "PGPASSWORD",
                 statement_timeout_ms: int = 30_000, application_name: str = "beamscore"):
        import psycopg

        from store.backends import pg_copy

        parts = urlsplit(url)
        if self.carries_password(url):
            raise ValueError("the database URL must not contain a password; use "
                             f"the environment variable {password_env}")
        kwargs: dict[str, Any] = {
            "application_name": application_name,
            # A session stopped inside a transaction (a frozen run) has it ended by the
            # server, so the ledger rows it read FOR SHARE never block a takeover long.
            "options": f"-c statement_timeout={int(statement_timeout_ms)} "
                       f"-c lock_timeout={int(statement_timeout_ms)} "
                       "-c idle_in_transaction_session_timeout="
                       f"{max(int(statement_timeout_ms), 60_000)}",
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
            refused = refused_access(exc, url, password_env)
            if refused is not None:
                raise refused from exc
            # a URL libpq cannot parse (an unknown parameter) is refused at connect only
            kind = BadConnectionOptions if isinstance(exc, psycopg.ProgrammingError) \
                else classify_pg_error(exc)
            if kind is BadConnectionOptions:
                raise kind(f"cannot connect to {redact(url)}: the URL's connection options "
                           "are invalid (not retried, waiting cannot fix it; fix `db`): "
                           f"{_problem(exc)}") from exc
            raise kind(f"cannot connect to {redact(url)}: {exc}") from exc
        pg_copy.register(self.conn.adapters)

    @classmethod
    def open(cls, url: str, *, password_env: str, statement_timeout_ms: int) -> Database:
        return cls(url, password_env=password_env, statement_timeout_ms=statement_timeout_ms)

    @classmethod
    def identity(cls, url: str) -> str:
        parts = urlsplit(url)
        return f"postgresql://{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path}"

    @classmethod
    def carries_password(cls, url: str) -> bool:
        """Whether libpq would read a password from ``url``, in any of the ways it reads
        one (``user:secret@``, a ``password`` parameter under any percent-encoding)."""
        from psycopg import conninfo

        if super().carries_password(url):
            return True
        try:
            return "password" in conninfo.conninfo_to_dict(url)
        except Exception:  # noqa: BLE001 - not a URL libpq reads: connecting says why
            return False

    @contextmanager
    def migration_lock(self) -> Iterator[None]:
        with self._locked(_MIGRATION_LOCK):
            yield

    def exclusively(self, key: str) -> AbstractContextManager[None]:
        digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
        return self._locked(int.from_bytes(digest, "big", signed=True))

    @contextmanager
    def _locked(self, lock: int) -> Iterator[None]:
        """A transaction holding the advisory lock ``lock`` until it ends."""
        with self._classified(), self.conn.transaction():
            self.conn.execute("SELECT pg_advisory_xact_lock(%s)", [lock])
            yield

    @contextmanager
    def _classified(self) -> Iterator[None]:
        import psycopg

        try:
            yield
        except psycopg.Error as exc:
            raise classify_pg_error(exc)(f"{type(exc).__name__}: {exc}") from exc

    def upsert(self, table: Table, rows: Sequence[tuple[Any, ...]],
               fence: Fence | None = None) -> int:
        rows = one_row_per_key(table, rows)
        if not rows:
            return 0
        with self._classified():
            if self._skip_copy.get(table.name, 0) > 0:
                self._skip_copy[table.name] -= 1
            elif self._copy_new(table, rows, fence):
                return len(rows)
            self._stage_and_upsert(table, rows, fence)
        return len(rows)

    def _copy_new(self, table: Table, rows: Sequence[tuple[Any, ...]],
                  fence: Fence | None) -> bool:
        """Fast path: COPY straight into the table, right when no key exists yet. False
        if some key exists: the transaction rolled back and nothing was written."""
        import psycopg

        from store.backends.pg_copy import copy_rows

        try:
            with self.conn.transaction(), self.conn.cursor() as cur:
                self.check_fence(fence, table, rows)
                copy_rows(cur, table.name, table.columns, rows, self.dialect.types)
        except psycopg.errors.UniqueViolation:
            self.writes[(table.name, "conflict")] += 1
            self._skip_run[table.name] = min(64, 2 * self._skip_run.get(table.name, 0) or 1)
            self._skip_copy[table.name] = self._skip_run[table.name]
            return False
        self.writes[(table.name, "copy")] += 1
        self._skip_run[table.name] = 0
        return True

    def _stage_and_upsert(self, table: Table, rows: Sequence[tuple[Any, ...]],
                          fence: Fence | None) -> None:
        """COPY into a temporary staging table, then INSERT ... ON CONFLICT DO UPDATE."""
        from store.backends.pg_copy import copy_rows

        stage = f"_stage_{table.name}"
        with self.conn.transaction():
            self.check_fence(fence, table, rows)
            if stage not in self._staging:
                # Created in this transaction: it disappears if the transaction rolls
                # back, so it is remembered only after the commit below.
                self.conn.execute(
                    f"CREATE TEMP TABLE IF NOT EXISTS {stage} "  # type: ignore[arg-type]
                    f"(LIKE {table.name} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS")
            with self.conn.cursor() as cur:
                copy_rows(cur, stage, table.columns, rows, self.dialect.types)
                # Keys are unique here (de-duplicated above), so ON CONFLICT never meets
                # the same key twice in one statement.
                cur.execute(self.dialect.upsert(  # type: ignore[arg-type]
                    table, source=f"SELECT {', '.join(table.names)} FROM {stage}"))
        self._staging.add(stage)
        self.writes[(table.name, "upsert")] += 1

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._classified():
            cur = self.conn.execute(sql, tuple(params))  # type: ignore[arg-type]
            return cur.fetchall() if cur.description else []

    def execute_count(self, sql: str, params: Sequence[Any] = ()) -> int:
        with self._classified():
            return self.conn.execute(sql, tuple(params)).rowcount  # type: ignore[arg-type]

    def has_table(self, name: str) -> bool:
        rows = self.execute("SELECT to_regclass(%s)", [name])
        return bool(rows and rows[0][0] is not None)

    def close(self) -> None:
        self.conn.close()

