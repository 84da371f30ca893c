"""Migrations: a version 1 database becomes version 2 and keeps its rows."""

from __future__ import annotations

import datetime as dt
import re
import sqlite3
from pathlib import Path

import psycopg
import pytest

from store.backends.postgres import PostgresDialect
from store.backends.sqlite import SQLiteDialect
from store.database import SchemaMismatch, connect, from_json
from store.ledger import TrancheLedger
from store.schema import PREDICTIONS, SCHEMA_VERSION
from tests.store.test_pg_copy import assert_columns_have_copy_types
from tests.store.v1_schema import T0, create_v1


def _check_v2(db: object) -> None:
    from store.database import Database

    assert isinstance(db, Database)
    assert db.execute("SELECT max(version) FROM schema_version") == [(SCHEMA_VERSION,)]
    rows = db.execute("SELECT doc_id, tranche, position, metadata, source_file FROM "
                      "predictions ORDER BY doc_id")
    assert [(r[0], r[1], r[2], from_json(r[3])) for r in rows] == [
        ("d1", "2026-01-01", 0, {"channel": "email"}), ("d2", "2026-01-01", 0, None)]
    assert db.execute("SELECT count(*) FROM dead_letters") == [(1,)]
    entry = TrancheLedger(db).get("2026-01-01", "demo", "1")
    assert entry is not None and entry.status == "completed" and entry.counts == {"read": 3}
    # The new key: the same document in another tranche is another row.
    row = dict(zip(PREDICTIONS.names, [
        "d1", "2026-01-02", "billing", 0.5, "[]", "demo", "1", "ab" * 32, "run-2", T0,
        "/in/dt=2026-01-02/a.jsonl", 4, None]))
    db.upsert_predictions([PREDICTIONS.row(row)])
    assert db.execute("SELECT count(*) FROM predictions WHERE doc_id = 'd1'") == [(2,)]


def test_sqlite_version_1_database_is_migrated_keeping_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    conn = sqlite3.connect(path)
    create_v1(lambda sql, params: conn.execute(sql, params), "?")
    conn.commit()
    conn.close()
    db = connect(f"sqlite:///{path}")
    db.init_schema()
    db.init_schema()  # once migrated, nothing more to do
    _check_v2(db)
    assert db.execute("SELECT version FROM schema_version ORDER BY 1") == [(1,), (2,), (3,), (4,)]
    assert db.has_table("monitoring") and db.has_table("retrain_triggers")
    db.close()


@pytest.mark.postgres
def test_postgresql_version_1_database_is_migrated_to_real_types(pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        create_v1(lambda sql, params: conn.execute(sql, params), "%s")
    db = connect(pg_url)
    db.init_schema()
    _check_v2(db)
    types = dict(db.execute(
        "SELECT table_name || '.' || column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = 'public'"))
    assert types["predictions.scored_at"] == "timestamp with time zone"
    assert types["predictions.top_k"] == "jsonb" and types["runs.config"] == "jsonb"
    assert types["tranches.started_at"] == "timestamp with time zone"
    assert_columns_have_copy_types(db)
    [(started,)] = db.execute("SELECT started_at FROM runs")
    assert started == dt.datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=dt.timezone.utc)
    db.execute("SET enable_seqscan = off")
    for table in ("predictions", "dead_letters"):
        for column in ("run_id", "tranche"):  # a run's rows, a tranche's rows: indexed
            plan = " ".join(r[0] for r in db.execute(
                f"EXPLAIN SELECT count(*) FROM {table} WHERE {column} = 'x'"))
            assert "Index" in plan, (table, column, plan)
    db.close()


@pytest.mark.postgres
@pytest.mark.parametrize("column, made_as, named", [
    ("top_k", "text", "predictions.top_k is text, beamscore writes jsonb"),
    ("position", "integer", "predictions.position is integer, beamscore writes bigint"),
    ("score", "numeric", "predictions.score is numeric, beamscore writes double precision"),
])
def test_a_postgresql_table_made_by_hand_with_another_type_is_refused_naming_it(
        pg_url: str, column: str, made_as: str, named: str) -> None:
    """A binary COPY carries no types: the server reads each field with the column's
    own type, so a ``text`` top_k would take jsonb's bytes (a version byte first) and an
    ``integer`` position fail mid-run. Such a table is refused when the schema is made
    ready, the statement rolled back."""
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(_hand_made(column, made_as))
    db = connect(pg_url)
    with pytest.raises(SchemaMismatch, match=re.escape(named)):
        db.init_schema()
    db.close()
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT to_regclass('schema_version')").fetchone() == (None,)


def _hand_made(column: str, made_as: str) -> str:
    """CREATE TABLE predictions with beamscore's columns, ``column`` of type ``made_as``."""
    types = PostgresDialect.types
    columns = [f"{c.name} {made_as if c.name == column else types[c.type]}"
               for c in PREDICTIONS.columns]
    return (f"CREATE TABLE predictions ({', '.join(columns)}, "
            f"PRIMARY KEY ({', '.join(PREDICTIONS.key)}))")


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql",
                                                            marks=pytest.mark.postgres)])
def test_a_table_without_a_column_beamscore_writes_is_refused_naming_it(
        backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    url = (f"sqlite:///{tmp_path / 's.db'}" if backend == "sqlite"
           else request.getfixturevalue("pg_url"))
    db = connect(url)
    db.init_schema()
    db.execute("ALTER TABLE predictions DROP COLUMN metadata")
    with pytest.raises(SchemaMismatch, match=r"predictions\.metadata is missing"):
        db.init_schema()
    db.close()


@pytest.mark.postgres
def test_a_stricter_varchar_column_is_accepted(pg_url: str) -> None:
    """A text column narrowed to varchar(8) takes what beamscore writes (a value too
    long is a data error: dead-lettered by the sink), so it is no mismatch."""
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(_hand_made("label", "varchar(8)"))
    db = connect(pg_url)
    db.init_schema()
    db.close()


def test_a_sqlite_column_of_another_affinity_is_refused(tmp_path: Path) -> None:
    """SQLite converts by a column's affinity: in a doc_id declared INTEGER, "007" and
    "7" would be one document."""
    path = tmp_path / "hand.db"
    with sqlite3.connect(path) as conn:
        conn.execute(SQLiteDialect().ddl(PREDICTIONS)[0].replace("doc_id TEXT", "doc_id INTEGER")
                     .replace("score DOUBLE PRECISION", "score FLOAT"))
    db = connect(f"sqlite:///{path}")
    with pytest.raises(SchemaMismatch) as refused:
        db.init_schema()
    db.close()
    assert "predictions.doc_id is integer, beamscore writes text" in str(refused.value)
    assert "predictions.score" not in str(refused.value)  # FLOAT: REAL, as DOUBLE PRECISION


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql",
                                                            marks=pytest.mark.postgres)])
def test_a_column_beamscore_does_not_write_must_not_need_a_value(
        backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """An added NOT NULL column without a default would refuse every row; one with a
    default, or nullable, is fine."""
    url = (f"sqlite:///{tmp_path / 's.db'}" if backend == "sqlite"
           else request.getfixturevalue("pg_url"))
    db = connect(url)
    db.init_schema()
    db.execute("ALTER TABLE predictions ADD COLUMN region TEXT NOT NULL DEFAULT 'eu'")
    db.execute("ALTER TABLE predictions ADD COLUMN note TEXT")
    db.init_schema()
    if backend == "postgresql":  # SQLite cannot add a NOT NULL column without a default
        db.execute("ALTER TABLE predictions ADD COLUMN tenant TEXT NOT NULL")
        with pytest.raises(SchemaMismatch, match=r"predictions\.tenant is NOT NULL without a "
                                                 r"default, and beamscore does not write it"):
            db.init_schema()
    db.close()


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql",
                                                            marks=pytest.mark.postgres)])
def test_a_view_of_a_table_name_is_refused_naming_it(
        backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """A view named ``predictions`` where beamscore looks for its table (on PostgreSQL:
    first on the search path) is refused before anything is created, saying what it is
    (was: "cannot create index on relation" from the index DDL)."""
    url = (f"sqlite:///{tmp_path / 's.db'}" if backend == "sqlite"
           else request.getfixturevalue("pg_url"))
    db = connect(url)
    db.execute("CREATE VIEW predictions AS SELECT 1 AS x")
    where = "" if backend == "sqlite" else " in schema public"
    with pytest.raises(SchemaMismatch, match=re.escape(
            f"predictions is a view{where}, not a table: beamscore writes tables of those "
            "names")):
        db.init_schema()
    db.close()


@pytest.mark.parametrize("made", ["CREATE VIEW Dead_Letters AS SELECT 1 AS x",
                                  "CREATE VIEW RUNS AS SELECT 1 AS x"])
def test_a_sqlite_view_named_in_another_case_is_refused_too(made: str, tmp_path: Path) -> None:
    """SQLite's names are case-insensitive: ``Dead_Letters`` is the table's name too."""
    db = connect(f"sqlite:///{tmp_path / 's.db'}")
    db.execute(made)
    with pytest.raises(SchemaMismatch, match=r"(dead_letters|runs) is a view, not a table"):
        db.init_schema()
    db.close()


def test_a_trigger_named_like_a_table_is_no_obstacle(tmp_path: Path) -> None:
    """A trigger has its own namespace in SQLite: an audit trigger named ``predictions``
    on the predictions table is no reason to refuse the database."""
    db = connect(f"sqlite:///{tmp_path / 's.db'}")
    db.init_schema()
    db.execute("CREATE TABLE audit (at TEXT)")
    db.execute("CREATE TRIGGER predictions AFTER INSERT ON predictions BEGIN "
               "INSERT INTO audit VALUES (datetime('now')); END")
    db.init_schema()
    db.close()
