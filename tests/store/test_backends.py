"""The backends own their dialect: SQL that differs between databases lives only in
``store.backends``, every backend covers every column type and schema version, and
SQLite's errors are classified by result code (retried, dead-lettered or neither)."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from store.backends.sqlite import SQLiteDatabase, classify_sqlite_error
from store.database import (
    BACKENDS,
    PermanentDataError,
    StatementError,
    TransientDatabaseError,
    connect,
)
from store.schema import PREDICTIONS, SCHEMA_VERSION, TABLES, Column, Table

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("store", "transforms", "engine", "pipelines", "models", "landing", "tracking")
# What only a backend may say: upsert and RETURNING syntax, the drivers, a switch on
# the database's name.
DIALECT_ONLY = re.compile(r"ON CONFLICT|RETURNING|^\s*(import|from) (sqlite3|psycopg)\b"
                          r"|backend\s*[!=]=|==\s*[\"'](sqlite|postgres(ql)?)[\"']",
                          re.MULTILINE)


def test_sql_that_differs_between_databases_is_only_in_the_backends() -> None:
    found = []
    for package in PRODUCT:
        for path in (ROOT / package).rglob("*.py"):
            if path.is_relative_to(ROOT / "store" / "backends"):
                continue
            found += [f"{path.relative_to(ROOT)}: {m.group(0)!r}"
                      for m in DIALECT_ONLY.finditer(path.read_text())]
    assert found == []


def test_every_backend_has_every_column_type_and_schema_version() -> None:
    used = {c.type for table in TABLES for c in table.columns}
    for scheme, backend in BACKENDS.items():
        assert used <= set(backend.dialect.types), scheme
        for version in range(2, SCHEMA_VERSION + 1):
            assert isinstance(backend.dialect.migration(version), list), (scheme, version)


def _db(tmp_path: Path, busy_timeout_ms: int = 60_000) -> SQLiteDatabase:
    db = SQLiteDatabase(f"sqlite:///{tmp_path / 'b.db'}", busy_timeout_ms=busy_timeout_ms)
    db.init_schema()
    return db


def _row(doc_id: str = "d1", label: str = "billing") -> tuple[Any, ...]:
    return PREDICTIONS.row({
        "doc_id": doc_id, "tranche": "t", "label": label, "score": 0.5, "top_k": "[]",
        "model_name": "m", "model_version": "1", "model_sha256": "0" * 64, "run_id": "r",
        "scored_at": "2026-01-01T00:00:00+00:00", "source_file": "f", "position": 1,
        "metadata": None})


def test_a_locked_sqlite_database_is_transient(tmp_path: Path) -> None:
    db = _db(tmp_path, busy_timeout_ms=50)
    other = sqlite3.connect(tmp_path / "b.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(TransientDatabaseError, match="locked"):
            db.upsert_predictions([_row()])
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert db.upsert_predictions([_row()]) == 1  # the same write, once the lock is gone
    db.close()


def test_values_sqlite_rejects_are_permanent_with_its_message(tmp_path: Path) -> None:
    db = _db(tmp_path)
    with pytest.raises(PermanentDataError, match="NOT NULL constraint failed"):
        db.upsert_predictions([_row(label=None)])  # type: ignore[arg-type]
    with pytest.raises(PermanentDataError, match="too large"):
        db.upsert_predictions([_row()[:-2] + (2**70, None)])
    db.conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 1000)
    with pytest.raises(PermanentDataError, match="too big"):
        db.upsert_predictions([_row(doc_id="x" * 2000)])
    assert db.execute("SELECT count(*) FROM predictions") == [(0,)]
    db.close()


def test_a_statement_sqlite_cannot_run_is_neither_retried_nor_blamed_on_rows(
        tmp_path: Path) -> None:
    db = _db(tmp_path)
    with pytest.raises(StatementError, match="no such table"):
        db.execute("SELECT * FROM no_such_table")
    other = Table("other", (Column("k"),), key=("k",))
    with pytest.raises(StatementError):
        db.upsert(other, [("a",)])
    db.close()


def test_sqlite_result_codes_decide_the_class() -> None:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
    with pytest.raises(sqlite3.Error) as mismatch:
        conn.execute("INSERT INTO t VALUES ('not a number')")
    assert classify_sqlite_error(mismatch.value) is PermanentDataError
    busy = sqlite3.OperationalError("database is locked")
    busy.sqlite_errorcode = sqlite3.SQLITE_BUSY | (2 << 8)  # type: ignore[attr-defined]
    assert classify_sqlite_error(busy) is TransientDatabaseError  # an extended code
    # Not by message: the text alone says nothing.
    assert classify_sqlite_error(sqlite3.OperationalError("database is locked")) \
        is StatementError


def test_connect_picks_the_backend_by_scheme(tmp_path: Path) -> None:
    db = connect(f"sqlite:///{tmp_path / 'c.db'}")
    assert isinstance(db, SQLiteDatabase) and db.placeholder == "?"
    db.close()
    with pytest.raises(ValueError, match="unsupported database URL \\(scheme .mysql.\\)"):
        connect("mysql://h/d")
