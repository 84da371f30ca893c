"""More workers than ``sink.max_connections``: every row once, no convoy, and the run
summary tells waiting for the database from waiting for the rate limit (SQLite, the
real CLI)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from landing.samples import make_docs, write_tranche
from tests.pipelines.helpers import run_cli

DAY = "2026-05-02"


@pytest.mark.slow
@pytest.mark.parametrize("rate", [0, 20_000])
def test_four_workers_share_one_connection_and_the_summary_splits_the_waits(
        registry_root: str, tmp_path: Path, rate: int) -> None:
    root = tmp_path / "landing"
    docs = list(make_docs(4000, seed=7, prefix="sw", min_chars=50, max_chars=120))
    for i in range(4):
        write_tranche(str(root), DAY, docs[i::4], "jsonl", name=f"p{i}")
    db = tmp_path / "s.db"
    result = run_cli("score", "--date", DAY, "--input-root", str(root), "--registry",
                     registry_root, "--db", f"sqlite:///{db}", "--output-dir",
                     str(tmp_path / "out"), "--workers", "4", "--batch-size", "100",
                     "--sink-batch-rows", "200", "--sink-max-connections", "1",
                     "--sink-max-rows-per-second", str(rate),
                     "--sink-state-dir", str(tmp_path / "state"))
    assert result.rc == 0, result.err
    with sqlite3.connect(db) as conn:
        n, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT doc_id) FROM predictions").fetchone()
    assert n == distinct == len(docs)
    line = next(x for x in result.out.splitlines() if x.startswith("wall time"))
    assert "waited for database" in line and "throttled" not in line
    assert ("rate-limited" in line) == (rate > 0), line
