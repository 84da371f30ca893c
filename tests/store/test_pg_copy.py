"""Binary COPY (``store.backends.pg_copy``) against the server's own text parsing: the
same values, sent by binary COPY and by a plain INSERT whose parameters the server
parses from text, are stored identically, for every logical column type."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st
from psycopg.postgres import types as pg_types

from store.backends.pg_copy import copy_rows, register
from store.backends.postgres import PostgresDialect
from store.schema import Column

pytestmark = pytest.mark.postgres

COLUMNS = (Column("t"), Column("f", "float"), Column("i", "int"), Column("ts", "time"),
           Column("j", "json"), Column("n", "json", True))
TYPES = PostgresDialect.types  # logical column type -> SQL type

texts = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"),
                max_size=40)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**12, 10**12) | texts
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12)
offsets = st.integers(-14 * 60, 14 * 60).map(lambda m: dt.timezone(dt.timedelta(minutes=m)))
times = st.builds(lambda d, tz, spec: d.replace(tzinfo=tz).isoformat(timespec=spec),
                  st.datetimes(dt.datetime(1900, 1, 1), dt.datetime(2200, 1, 1)), offsets,
                  st.sampled_from(["seconds", "milliseconds", "microseconds"]))
rows = st.tuples(texts, st.floats(allow_nan=True, allow_infinity=True),
                 st.integers(-2**63, 2**63 - 1), times, json_values.map(json.dumps),
                 st.none() | json_values.map(json.dumps))


@pytest.fixture(scope="module")
def conn() -> Iterator[psycopg.Connection[Any]]:
    """One connection to the server's ``test`` database, binary dumpers registered; the
    tests' tables are temporary."""
    from tests.postgres import PG

    with psycopg.connect(f"{PG}/test", autocommit=True) as c:
        register(c.adapters)
        for name in ("by_copy", "by_insert"):
            cols = ", ".join(f"{c.name} {TYPES[c.type]}" for c in COLUMNS)
            c.execute(f"CREATE TEMP TABLE {name} (k bigint, {cols})")  # type: ignore[arg-type]
        yield c


def _stored(conn: psycopg.Connection[Any], table: str) -> list[tuple[Any, ...]]:
    cols = ", ".join(f"{c.name}::text" for c in COLUMNS)
    return conn.execute(f"SELECT {cols} FROM {table} ORDER BY k").fetchall()  # type: ignore[arg-type]


@given(batch=st.lists(rows, min_size=1, max_size=20))
def test_binary_copy_stores_what_the_server_parses_from_text(
        conn: psycopg.Connection[Any], batch: list[tuple[Any, ...]]) -> None:
    conn.execute("TRUNCATE by_copy, by_insert")
    keyed = [(k, *r) for k, r in enumerate(batch)]
    with conn.cursor() as cur:
        copy_rows(cur, "by_copy", (Column("k", "int"), *COLUMNS), keyed, TYPES)
        casts = ", ".join(["%s"] + [f"%s::{TYPES[c.type]}" for c in COLUMNS])
        cur.executemany(f"INSERT INTO by_insert VALUES ({casts})",  # type: ignore[arg-type]
                        [(k, *(None if v is None else str(v) for v in r)) for k, *r in keyed])
    assert _stored(conn, "by_copy") == _stored(conn, "by_insert")


def test_json_text_is_stored_as_the_json_it_spells(conn: psycopg.Connection[Any]) -> None:
    conn.execute("TRUNCATE by_copy")
    with conn.cursor() as cur:
        copy_rows(cur, "by_copy", (Column("k", "int"), *COLUMNS),
                  [(1, "a", 0.5, 1, "2026-01-01T00:00:00+00:00", '[["x", 0.9]]', None)], TYPES)
    assert conn.execute("SELECT jsonb_typeof(j), j -> 0 ->> 0, n FROM by_copy").fetchall() \
        == [("array", "x", None)]


@pytest.mark.parametrize(("column", "value", "says"), [
    (3, "2026-01-01T00:00:00", "column ts (time) cannot take '2026-01-01T00:00:00': the time "
                               "'2026-01-01T00:00:00' has no UTC offset"),
    (3, "", "column ts (time) cannot take ''"),
    (4, ["x"], "column j (json) cannot take ['x']: a json column takes JSON text"),
    (2, 2**63, "column i (int) cannot take 9223372036854775808"),
    (2, 1.5, "column i (int) cannot take 1.5"),
    (0, 5, "column t (text) cannot take 5"),
    (1, "x", "column f (float) cannot take 'x'"),
    (0, "\ud800", "column t (text) cannot take '\\ud800'"),
])
def test_a_value_copy_cannot_send_is_a_data_error_naming_its_column(
        conn: psycopg.Connection[Any], column: int, value: Any, says: str) -> None:
    """Refused by the client as ``psycopg.DataError`` (permanent: the sink dead-letters
    the row), the COPY cancelled, the connection still usable."""
    from store.backends.postgres import classify_pg_error
    from store.database import PermanentDataError

    conn.execute("TRUNCATE by_copy")
    good = ("a", 0.5, 1, "2026-01-01T00:00:00+00:00", "1", None)
    row = list(good)
    row[column] = value
    with pytest.raises(psycopg.DataError) as caught, conn.cursor() as cur:
        copy_rows(cur, "by_copy", COLUMNS, [good, tuple(row)], TYPES)
    assert says in str(caught.value)
    assert classify_pg_error(caught.value) is PermanentDataError
    with conn.cursor() as cur:
        copy_rows(cur, "by_copy", COLUMNS, [good], TYPES)
    assert conn.execute("SELECT count(*) FROM by_copy").fetchall() == [(1,)]


def test_every_logical_type_has_a_binary_form() -> None:
    """COPY finds the binary dumper of each SQL type the dialect declares."""
    assert {k: pg_types[v.lower()].name for k, v in TYPES.items()} == {
        "text": "text", "float": "float8", "int": "int8", "time": "timestamptz",
        "json": "jsonb"}


def assert_columns_have_copy_types(db: Any) -> None:
    """Every column of beamscore's tables has the type the dialect declares for its
    logical type, the one binary COPY sends (it refuses a value of any other type)."""
    from store.schema import TABLES

    stored = dict(db.execute(
        "SELECT table_name || '.' || column_name, udt_name FROM information_schema.columns "
        "WHERE table_schema = current_schema()"))
    for table in TABLES:
        for c in table.columns:
            assert stored[f"{table.name}.{c.name}"] == pg_types[TYPES[c.type].lower()].name, \
                (table.name, c)


def test_a_new_database_has_the_types_binary_copy_sends(pg_url: str) -> None:
    from store.database import connect

    db = connect(pg_url)
    try:
        db.init_schema()
        assert_columns_have_copy_types(db)
    finally:
        db.close()
