"""Rows the database rejects for their values (SQLSTATE classes 22, 23, 54) are isolated
by bisection into sink dead letters with the database's message; the rest of the run is
written and no tranche fails (PostgreSQL, through the CLI)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from landing.samples import make_docs, write_tranche
from store.database import connect
from tests.pipelines.helpers import run_cli

DAYS = ("2026-05-01", "2026-05-02", "2026-05-03")


@pytest.mark.postgres
def test_an_id_too_long_for_the_index_is_one_sink_dead_letter(registry_root: str,
                                                                tmp_path: Path,
                                                                pg_url: str) -> None:
    root = tmp_path / "landing"
    for k, day in enumerate(DAYS):
        docs = list(make_docs(200, seed=40 + k, prefix=f"s{k}"))
        if k == 1:  # an id of 3,000 random characters: over the btree's 2,704-byte limit
            docs[7]["id"] = "".join(f"{(i * 7919) % 65536:04x}" for i in range(750))
        write_tranche(str(root), day, docs, "jsonl")
    result = run_cli("score", "--from", DAYS[0], "--to", DAYS[-1], "--input-root", str(root),
                     "--registry", registry_root, "--db", pg_url,
                     "--output-dir", str(tmp_path / "out"))
    assert result.rc == 0, result.err
    db = connect(pg_url)
    try:
        dead = db.execute("SELECT tranche, stage, reason FROM dead_letters")
        written = db.execute("SELECT tranche, count(*) FROM predictions GROUP BY tranche "
                             "ORDER BY tranche")
        statuses = db.execute("SELECT tranche, status FROM tranches ORDER BY tranche")
        [(counts,)] = db.execute("SELECT counts FROM runs")
    finally:
        db.close()
    assert [(t, s) for t, s, _ in dead] == [(DAYS[1], "sink")]
    assert "index row size" in dead[0][2] and "exceeds" in dead[0][2]
    assert written == [(DAYS[0], 200), (DAYS[1], 199), (DAYS[2], 200)]
    assert statuses == [(d, "completed") for d in DAYS]
    summary = counts if isinstance(counts, dict) else json.loads(counts)
    assert summary["tranches"][DAYS[1]]["dead_lettered"] == 1
    assert _parquet_ids(tmp_path / "out", DAYS[1]) == sorted(
        d["id"] for i, d in enumerate(make_docs(200, seed=41, prefix="s1")) if i != 7)


def _parquet_ids(out: Path, day: str) -> list[str]:
    """The ids of a tranche's prediction files, each as often as it occurs."""
    import pyarrow.parquet as pq

    return sorted(i for f in sorted((out / f"dt={day}").glob("predictions-*.parquet"))
                  for i in pq.read_table(f).column("doc_id").to_pylist())


def test_rows_sqlite_refuses_leave_the_prediction_files_too(registry_root: str,
                                                           tmp_path: Path) -> None:
    """A trigger refuses two ids (SQLITE_CONSTRAINT): they are sink dead letters, and the
    Parquet files hold what the table holds, each other record once, also with a
    duplicate id removed from the same batch's file."""
    import sqlite3

    path = tmp_path / "s.db"
    db = connect(f"sqlite:///{path}")
    db.init_schema()
    db.close()
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TRIGGER refuse BEFORE INSERT ON predictions WHEN NEW.doc_id IN "
                     "('r-0000003', 'r-0000040') BEGIN SELECT RAISE(ABORT, 'refused'); END")
    docs = list(make_docs(60, seed=45, prefix="r"))
    docs[50]["id"] = docs[10]["id"]  # a later occurrence: a dedupe dead letter
    write_tranche(str(tmp_path / "landing"), DAYS[0], docs, "jsonl")
    result = run_cli("score", "--date", DAYS[0], "--input-root", str(tmp_path / "landing"),
                     "--registry", registry_root, "--db", f"sqlite:///{path}",
                     "--output-dir", str(tmp_path / "out"), "--batch-size", "64")
    assert result.rc == 0, result.err
    with sqlite3.connect(path) as conn:
        dead = sorted(conn.execute("SELECT position, stage FROM dead_letters"))
        table = sorted(i for (i,) in conn.execute("SELECT doc_id FROM predictions"))
    assert dead == [(4, "sink"), (41, "sink"), (51, "dedupe")]
    assert table == sorted({d["id"] for d in docs} - {"r-0000003", "r-0000040"})
    assert _parquet_ids(tmp_path / "out", DAYS[0]) == table
