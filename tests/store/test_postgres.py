"""PostgreSQL backend against the real server: COPY fast path, upsert fallback, schema,
error classes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest

from store.backends.postgres import PostgresDatabase, classify_pg_error
from store.database import (
    DatabaseUnreachable,
    PermanentDataError,
    StatementError,
    TransientDatabaseError,
)
from store.schema import PREDICTIONS

pytestmark = pytest.mark.postgres
DAY = "2026-02-01"


def _pred_row(doc_id: str, label: str, run_id: str = "r1",
              position: int | None = None) -> tuple[Any, ...]:
    return PREDICTIONS.row({
        "doc_id": doc_id, "tranche": DAY, "label": label, "score": 0.5, "top_k": "[]",
        "model_name": "m", "model_version": "1", "model_sha256": "0" * 64, "run_id": run_id,
        "scored_at": "2026-02-01T00:00:00+00:00", "source_file": "f.jsonl",
        "position": int(doc_id[1:]) if position is None else position, "metadata": None})


def test_copy_fast_path_falls_back_to_upsert_on_existing_keys(pg_url: str) -> None:
    """New keys go straight in by COPY; a batch with any existing key is rolled back and
    upserted instead, so a rerun or a retried bundle updates rows and never duplicates."""
    db = PostgresDatabase(pg_url)
    db.init_schema()
    assert db.upsert_predictions([_pred_row(f"d{i}", "a") for i in range(100)]) == 100
    assert db.writes == {("predictions", "copy"): 1}  # the fast path took it
    # Half existing, half new keys, one key twice in the batch: its first occurrence (the
    # smaller position) wins.
    mixed = [_pred_row(f"d{i}", "b", "r2") for i in range(50, 150)] + [
        _pred_row("d60", "c", "r2", position=1)]
    assert db.upsert_predictions(mixed) == 100
    assert db.writes[("predictions", "conflict")] == 1
    assert db.writes[("predictions", "upsert")] == 1
    # The next batch skips the COPY attempt, the one after tries it again.
    db.upsert_predictions([_pred_row("d0", "z", "r3")])
    assert db.writes[("predictions", "upsert")] == 2, "skipped the COPY attempt"
    assert db.writes[("predictions", "conflict")] == 1
    db.upsert_predictions([_pred_row("d200", "n", "r4")])
    assert db.writes[("predictions", "copy")] == 2, "tried COPY again, and it took it"
    rows = dict(db.execute("SELECT doc_id, label FROM predictions"))  # type: ignore[arg-type]
    assert len(rows) == 151
    assert rows["d0"] == "z" and rows["d10"] == "a" and rows["d60"] == "c"
    assert rows["d70"] == "b" and rows["d149"] == "b" and rows["d200"] == "n"
    (dups,) = db.execute("SELECT count(*) - count(DISTINCT doc_id) FROM predictions")[0]
    assert dups == 0
    db.close()



def test_a_batch_repeating_its_own_keys_goes_by_copy_first_occurrence_winning(
        pg_url: str) -> None:
    """A key twice in one batch (none stored): the batch is de-duplicated first (the
    first occurrence wins), goes by COPY and keeps the next batch on the fast path."""
    db = PostgresDatabase(pg_url)
    db.init_schema()
    batch = [_pred_row(f"d{i}", "a") for i in range(10)] + [
        _pred_row("d3", "later", position=30), _pred_row("d5", "earlier", position=-1)]
    assert db.upsert_predictions(batch) == 10
    assert db.writes == {("predictions", "copy"): 1}
    db.upsert_predictions([_pred_row("d20", "n", "r2")])
    assert db.writes == {("predictions", "copy"): 2}
    rows = dict(db.execute("SELECT doc_id, label FROM predictions"))  # type: ignore[arg-type]
    assert len(rows) == 11 and rows["d3"] == "a" and rows["d5"] == "earlier"
    db.close()


def test_the_first_occurrence_is_by_code_point_whatever_the_database_collation() -> None:
    """Of two rows of one key from the same run, the smaller (source_file, position) stays
    by code point, as in Python (``one_row_per_key``, the in-pipeline dedupe) and
    SQLite, also in a database whose collation sorts 'a' before 'B'."""
    import uuid

    from tests.postgres import PG, pg_admin

    name = f"beamscore_test_{uuid.uuid4().hex[:12]}"
    with pg_admin() as admin:
        admin.execute(f"CREATE DATABASE \"{name}\" TEMPLATE template0 "  # type: ignore[arg-type]
                      "LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'")
    try:
        db = PostgresDatabase(f"{PG}/{name}")
        db.init_schema()
        assert db.execute("SELECT 'a' < 'B'") == [(True,)]  # this database's own order

        def row(source: str) -> tuple[Any, ...]:
            values = dict(zip(PREDICTIONS.names, _pred_row("d1", source)))
            return PREDICTIONS.row(values | {"source_file": f"/in/{source}.jsonl"})

        db.upsert_predictions([row("a")])
        db.upsert_predictions([row("B")])  # same key, same run: "B" < "a" by code point
        db.upsert_predictions([row("a")])
        assert db.execute("SELECT label FROM predictions") == [("B",)]
        db.close()
    finally:
        with pg_admin() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}"')  # type: ignore[arg-type]


def test_schema_is_created_once_and_rows_go_in_column_order(pg_url: str) -> None:
    db = PostgresDatabase(pg_url)
    db.init_schema()
    db.init_schema()
    assert db.execute("SELECT count(*) FROM schema_version") == [(1,)]
    cols = [r[0] for r in db.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'predictions' "
        "ORDER BY ordinal_position")]
    assert tuple(cols) == PREDICTIONS.names
    assert db.has_table("tranches") and not db.has_table("nonexistent")
    db.close()


def test_sqlstates_are_classified_transient_or_permanent(pg_url: str) -> None:
    db = PostgresDatabase(pg_url)
    for sql, kind in (("SELECT 1/0", PermanentDataError),          # 22012
                      ("SELECT pg_sleep(1)", TransientDatabaseError)):  # 57014 timeout
        db.execute("SET statement_timeout = 100")
        with pytest.raises(kind):
            db.execute(sql)
    with pytest.raises(RuntimeError):
        db.execute("SELECT * FROM no_such_table")  # 42P01: a bug, not retried
    db.close()
    error = psycopg.errors.UniqueViolation()
    assert classify_pg_error(error) is PermanentDataError


def test_an_id_too_long_for_the_index_is_a_data_error_with_the_database_message(
        pg_url: str) -> None:
    """A 3,000-character id exceeds the btree row size (SQLSTATE 54000): the rows are
    rejected (the sink dead-letters them), never retried, on both write paths."""
    import secrets

    db = PostgresDatabase(pg_url)
    db.init_schema()
    long_id = "d" + secrets.token_hex(1500)  # random: the index cannot compress it
    with pytest.raises(PermanentDataError, match="index row size .* exceeds"):
        db.upsert_predictions([_pred_row("d1", "a"), _pred_row(long_id, "a", position=2)])
    assert db.writes == {}  # the COPY path rolled back
    db.upsert_predictions([_pred_row("d1", "a")])
    with pytest.raises(PermanentDataError, match="index row size .* exceeds"):
        # d1 exists: the COPY attempt conflicts, the staging upsert meets the long id.
        db.upsert_predictions([_pred_row("d1", "b"), _pred_row(long_id, "b", position=2)])
    assert db.writes[("predictions", "conflict")] == 1
    assert db.execute("SELECT doc_id, label FROM predictions") == [("d1", "a")]
    db.close()


def test_a_dropped_connection_is_transient_and_the_session_reconnects(
        pg_url: str, tmp_path: Any) -> None:
    from store.session import DatabaseSession, DatabaseSettings
    from tests.postgres import pg_admin

    db = PostgresDatabase(pg_url)
    [(pid,)] = db.execute("SELECT pg_backend_pid()")
    with pg_admin() as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [pid])
    with pytest.raises(TransientDatabaseError):
        db.execute("SELECT 1")
    with pytest.raises(TransientDatabaseError):
        db.upsert_predictions([_pred_row("d1", "a")])  # the connection is closed now
    db.close()

    session = DatabaseSession(DatabaseSettings(pg_url, state_dir=str(tmp_path)))
    [(pid,)] = session.run(lambda d: d.execute("SELECT pg_backend_pid()"))
    with pg_admin() as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [pid])
    assert session.run(lambda d: d.upsert_predictions([_pred_row("d1", "a")])) == 1
    session.close()


@pytest.mark.parametrize("sqlstate, kind", [
    ("08006", DatabaseUnreachable),      # connection failure
    ("08P01", StatementError),           # protocol violation: COPY data the table refuses
    ("53300", DatabaseUnreachable),      # too many connections
    ("53100", TransientDatabaseError),   # disk full: retried max_retries times
    ("40001", TransientDatabaseError),   # serialization failure
    ("40P01", TransientDatabaseError),   # deadlock
    ("55P03", TransientDatabaseError),   # lock not available
    ("57P01", DatabaseUnreachable),      # admin shutdown
    ("25P03", TransientDatabaseError),   # a transaction left idle past the server's limit
    ("57P03", DatabaseUnreachable),      # cannot connect now
    ("22001", PermanentDataError),       # value too long
    ("23502", PermanentDataError),       # not null violation
    ("54000", PermanentDataError),       # program limit exceeded: index row size
    ("42601", StatementError),           # syntax error: a bug, not the rows' fault
    ("42P01", StatementError),           # undefined table: a bug, not the rows
    ("42501", StatementError),           # insufficient privilege: configuration
])
def test_errors_are_classified_by_sqlstate_not_by_exception_type(
        sqlstate: str, kind: type[Exception]) -> None:
    error = psycopg.errors.lookup(sqlstate)("whatever the message says")
    assert classify_pg_error(error) is kind


def test_client_side_errors_without_a_sqlstate() -> None:
    assert classify_pg_error(psycopg.OperationalError("the connection is closed")) \
        is DatabaseUnreachable
    assert classify_pg_error(psycopg.DataError("NUL character in text")) is PermanentDataError


class _Clock:
    """A patched clock that ``sleep`` moves on: no test waits in real time."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def _open_within(url: str, window: float, clock: _Clock, password_env: str = "PGPASSWORD"
                 ) -> None:
    """Open ``url`` the way the launcher does: retried while transient, for ``window``."""
    from store.database import connect
    from store.retry import RetryPolicy, with_retries

    with_retries(lambda: connect(url, password_env=password_env),
                 RetryPolicy(max_retries=10**9, max_seconds=window),
                 sleep=clock.sleep, clock=clock).close()


@pytest.mark.parametrize("url, named", [
    ("postgresql://beamscore_no_such_role@{host}/test", "role 'beamscore_no_such_role'"),
    ("postgresql://{host}/beamscore_no_such_database", "database 'beamscore_no_such_database'"),
])
def test_a_refused_role_or_database_fails_at_once_naming_it(
        url: str, named: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The server refuses these at connect (28000, 3D000) and psycopg gives no SQLSTATE:
    the error is AccessDenied, not transient, so the connect window is never waited
    out; the message names the role or database and never the password."""
    from urllib.parse import urlsplit

    from store.database import AccessDenied
    from tests.postgres import PG

    monkeypatch.setenv("BEAMSCORE_TEST_SECRET", "s3cret-never-printed")
    clock = _Clock()
    with pytest.raises(AccessDenied) as raised:
        _open_within(url.format(host=urlsplit(PG).netloc), 300.0, clock,
                     password_env="BEAMSCORE_TEST_SECRET")
    assert clock.slept == []
    assert named in str(raised.value) and "s3cret" not in str(raised.value)
    assert not isinstance(raised.value, TransientDatabaseError)


def test_a_server_that_refuses_the_tcp_connection_stays_transient() -> None:
    """Nothing listens on the port (a server down): retried until the window closes."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # free, and nothing listens on it
    clock = _Clock()
    with pytest.raises(TransientDatabaseError):
        _open_within(f"postgresql://127.0.0.1:{port}/test", 5.0, clock)
    assert clock.slept and clock.now == pytest.approx(5.0)


class _RefusedConn:
    user, db, needs_password = b"scorer", b"scores", True


def test_refusals_are_read_from_the_sqlstate_or_the_missing_password_flag() -> None:
    """A SQLSTATE wins where psycopg gives one; libpq's needs-password flag (no
    password set while the server asks one) is a refused password too; other
    connection errors (too many connections: 53300) are not refusals."""
    from store.backends.postgres import refused_access

    url = "postgresql://scorer@db.example:5432/scores"
    for state in ("28000", "28P01", "3D000"):
        denied = refused_access(psycopg.errors.lookup(state)("refused"), url, "PGPASSWORD")
        assert denied is not None and f"SQLSTATE {state}" in str(denied)
    assert refused_access(psycopg.errors.lookup("53300")("too many"), url, "PGPASSWORD") \
        is None
    flagged = psycopg.OperationalError("connection failed: fe_sendauth: no password supplied",
                                       pgconn=_RefusedConn())  # type: ignore[arg-type]
    denied = refused_access(flagged, url, "SCORES_PASSWORD")
    assert denied is not None and "SCORES_PASSWORD holds none" in str(denied)
    assert refused_access(psycopg.OperationalError("connection failed: Connection refused"),
                          url, "PGPASSWORD") is None
    # an LDAP or RADIUS server that does not answer fails the same way: not a refusal
    for method in ("LDAP", "RADIUS", "PAM"):
        assert refused_access(psycopg.OperationalError(
            f'connection failed: FATAL:  {method} authentication failed for user "scorer"'),
            url, "PGPASSWORD") is None
    assert refused_access(psycopg.OperationalError(
        'connection failed: FATAL:  Peer authentication failed for user "scorer"'),
        url, "PGPASSWORD") is not None


@pytest.mark.parametrize("options, problem", [
    ("sslmode=bogus", 'invalid sslmode value: "bogus"'),
    ("service=beamscore_no_such_service", 'service "beamscore_no_such_service" not found'),
    ("target_session_attrs=bogus", "invalid target_session_attrs value"),
    ("no_such_option=1", 'invalid URI query parameter: "no_such_option"'),
])
def test_connection_options_libpq_refuses_fail_at_once(options: str, problem: str) -> None:
    """libpq refuses these before trying any server: a misconfiguration (exit 1 at once),
    not a database that is down (exit 75 after the connect window)."""
    from urllib.parse import urlsplit

    from store.database import BadConnectionOptions
    from tests.postgres import PG

    clock = _Clock()
    with pytest.raises(BadConnectionOptions) as raised:
        _open_within(f"postgresql://{urlsplit(PG).netloc}/test?{options}", 300.0, clock)
    assert clock.slept == []
    assert problem in str(raised.value) and "`db`" in str(raised.value)
    assert not isinstance(raised.value, TransientDatabaseError)


def test_a_missing_unix_socket_stays_transient(tmp_path: Path) -> None:
    """libpq fails a Unix socket that is not there at once too, but it tried a server:
    a database that is down (or not started yet), waited for."""
    clock = _Clock()
    with pytest.raises(TransientDatabaseError):
        _open_within(f"postgresql://{str(tmp_path).replace('/', '%2F')}/test", 5.0, clock)
    assert clock.slept and clock.now == pytest.approx(5.0)
