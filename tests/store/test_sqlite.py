"""SQLite backend: schema, idempotent upserts of predictions and dead letters."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from store.backends.sqlite import SQLiteDatabase
from store.database import connect, connect_existing
from store.schema import PREDICTIONS
from tests.data import sqlite_rows


def _pred(doc_id: str, label: str = "billing", score: float = 0.9, version: str = "1",
          run_id: str = "run-a", tranche: str = "2026-01-01",
          position: int = 1) -> tuple[Any, ...]:
    row = {
        "doc_id": doc_id, "tranche": tranche, "label": label, "score": score,
        "top_k": f'[["{label}", {score}]]', "model_name": "demo", "model_version": version,
        "model_sha256": "ab" * 32, "run_id": run_id, "scored_at": "2026-01-02T03:04:05+00:00",
        "source_file": f"/in/dt={tranche}/part-0.jsonl", "position": position,
        "metadata": None,
    }
    return PREDICTIONS.row(row)


def _dead(position: int, reason: str = "malformed JSON", run_id: str = "run-a",
          stage: str = "read") -> tuple[Any, ...]:
    return (run_id, "2026-01-01", "/in/dt=2026-01-01/part-0.jsonl", position, stage, reason,
            '{"id": ')


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "nested" / "scores.db"


@pytest.fixture
def db(db_path: Path) -> Iterator[SQLiteDatabase]:
    database = connect(f"sqlite:///{db_path}")
    assert isinstance(database, SQLiteDatabase)
    database.init_schema()
    yield database
    database.close()


def test_connect_creates_the_file_and_schema_is_idempotent(db: SQLiteDatabase,
                                                           db_path: Path) -> None:
    assert db_path.exists()
    db.init_schema()
    tables = {r[0] for r in sqlite_rows(
        db_path, "SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"predictions", "dead_letters", "runs", "schema_version"} <= tables
    assert len(sqlite_rows(db_path, "SELECT version FROM schema_version")) == 1


def test_upserting_predictions_twice_keeps_one_row_per_key_later_values_win(
        db: SQLiteDatabase, db_path: Path) -> None:
    first = [_pred(f"d{i}", "billing", 0.5, run_id="run-a") for i in range(50)]
    db.upsert_predictions(first)
    db.upsert_predictions(first)
    assert sqlite_rows(db_path, "SELECT count(*) FROM predictions") == [(50,)]
    second = [_pred(f"d{i}", "shipping", 0.75, run_id="run-b") for i in range(0, 50, 2)]
    db.upsert_predictions(second)
    rows = dict(((r[0]), r[1:]) for r in sqlite_rows(
        db_path, "SELECT doc_id, label, score, run_id FROM predictions"))
    assert len(rows) == 50
    for i in range(50):
        expected = ("shipping", 0.75, "run-b") if i % 2 == 0 else ("billing", 0.5, "run-a")
        assert rows[f"d{i}"] == expected


def test_duplicate_keys_of_one_run_keep_the_first_occurrence(
        db: SQLiteDatabase, db_path: Path) -> None:
    batch = [_pred("same", "billing", 0.1, position=7), _pred("other"),
             _pred("same", "returns", 0.2, position=3), _pred("same", "account", 0.3, position=9)]
    db.upsert_predictions(batch)
    db.upsert_predictions([_pred("same", "shipping", 0.4, position=5)])  # a later write
    assert sqlite_rows(db_path, "SELECT doc_id, label, score FROM predictions ORDER BY doc_id") == [
        ("other", "billing", 0.9), ("same", "returns", 0.2)]


def test_the_same_document_in_two_tranches_is_two_rows(db: SQLiteDatabase,
                                                       db_path: Path) -> None:
    db.upsert_predictions([_pred("d1", tranche="2026-01-01"), _pred("d1", tranche="2026-01-02")])
    assert sqlite_rows(db_path, "SELECT tranche FROM predictions ORDER BY 1") == [
        ("2026-01-01",), ("2026-01-02",)]


def test_another_model_version_is_a_separate_row(db: SQLiteDatabase, db_path: Path) -> None:
    db.upsert_predictions([_pred("d1", version="1"), _pred("d1", "returns", version="2")])
    assert sqlite_rows(db_path, "SELECT model_version, label FROM predictions ORDER BY 1") == [
        ("1", "billing"), ("2", "returns")]


def test_dead_letter_upsert_is_idempotent(db: SQLiteDatabase, db_path: Path) -> None:
    rows = [_dead(3), _dead(9), _dead(9, "missing id", stage="validate")]
    db.upsert_dead_letters(rows)
    db.upsert_dead_letters(rows)
    db.upsert_dead_letters([_dead(3, "malformed JSON (retried)"), _dead(3)])
    got = sqlite_rows(db_path, "SELECT position, stage, reason FROM dead_letters ORDER BY 1, 2")
    assert got == [(3, "read", "malformed JSON"), (9, "read", "malformed JSON"),
                   (9, "validate", "missing id")]
    db.upsert_dead_letters([_dead(9, "malformed JSON: line 1 column 8")])
    assert sqlite_rows(db_path, "SELECT reason FROM dead_letters WHERE position = 9 AND "
                          "stage = 'read'") == [("malformed JSON: line 1 column 8",)]
    # A different run keeps its own dead letters.
    db.upsert_dead_letters([_dead(3, run_id="run-b")])
    assert sqlite_rows(db_path, "SELECT count(*) FROM dead_letters") == [(4,)]


def test_two_connections_see_each_others_writes(db: SQLiteDatabase, db_path: Path) -> None:
    other = connect(f"sqlite:///{db_path}")
    try:
        other.init_schema()
        other.upsert_predictions([_pred("from-other")])
        db.upsert_predictions([_pred("from-first")])
        assert sorted(r[0] for r in db.execute("SELECT doc_id FROM predictions")) == [
            "from-first", "from-other"]
    finally:
        other.close()


def test_empty_batches_are_no_ops(db: SQLiteDatabase, db_path: Path) -> None:
    assert db.upsert_predictions([]) == 0
    assert db.upsert_dead_letters([]) == 0
    assert sqlite_rows(db_path, "SELECT count(*) FROM predictions") == [(0,)]


def test_connect_existing_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "none.db"
    assert connect_existing(f"sqlite:///{missing}") is None
    assert not missing.exists()
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    assert connect_existing(f"sqlite:///{empty}") is None  # no ledger table yet
    db = connect(f"sqlite:///{empty}")
    db.init_schema()
    db.close()
    found = connect_existing(f"sqlite:///{empty}")
    assert found is not None and found.has_table("predictions")
    found.close()
