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
