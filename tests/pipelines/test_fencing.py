"""Fencing: a run frozen past its lease (a paused VM, a stopped process group) while
another run takes its tranche over writes nothing after the takeover, ends ``abandoned``
with ``lease lost`` and exit 5, and never changes the other run's rows or status."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from landing.samples import make_docs, write_tranche
from store import run_records
from store.database import connect
from tests.pipelines.helpers import run_cli

DAY = "2026-04-02"
REPO = Path(__file__).resolve().parents[2]
N_DOCS = 3000
LEASE = 8


def _landing(tmp: Path) -> Path:
    root = tmp / "landing"
    docs = list(make_docs(N_DOCS, seed=31, prefix="f", max_chars=200))
    for i in range(3):
        write_tranche(str(root), DAY, docs[i * 1000:(i + 1) * 1000], "jsonl", name=f"p{i}")
    return root


def _query(url: str) -> Callable[[str], list[tuple[Any, ...]]]:
    def run(sql: str) -> list[tuple[Any, ...]]:
        db = connect(url)
        try:
            return db.execute(sql)
        finally:
            db.close()
    return run


def _wait(until: Callable[[], bool], proc: subprocess.Popen[str] | None, what: str,
          timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the first run ended before {what}: {proc.communicate()}")
        try:
            if until():
                return
        except Exception:  # noqa: BLE001 - tables not created yet
            pass
        time.sleep(0.1)
    pytest.fail(f"timed out waiting until {what}")


def _frozen_run_is_fenced_out(url: str, registry: str, tmp: Path) -> None:
    root = _landing(tmp)
    args = ["score", "--model", "demo", "--date", DAY, "--input-root", str(root),
            "--registry", registry, "--db", url, "--output-dir", str(tmp / "out"),
            "--sink-lease-seconds", str(LEASE)]
    q = _query(url)
    # The first run writes slowly (a rate limit) in a process group of its own.
    first = subprocess.Popen([sys.executable, "-m", "pipelines.cli", *args,
                              "--sink-max-rows-per-second", "300", "--sink-batch-rows", "50"],
                             cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, start_new_session=True)
    try:
        _wait(lambda: q("SELECT count(*) FROM predictions")[0][0] > 0, first,
              "the first run writes")
        os.killpg(first.pid, signal.SIGSTOP)
        frozen_at = q("SELECT count(*) FROM predictions")[0][0]
        assert frozen_at < N_DOCS
        _wait(lambda: q("SELECT lease_until FROM tranches")[0][0] < time.time(), None,
              "the frozen run's lease expires", timeout=3 * LEASE)
        second = run_cli(*args)
        assert second.rc == 0, second.err
    finally:
        os.killpg(first.pid, signal.SIGCONT)
    out, err = first.communicate(timeout=180)
    assert first.returncode == 5, (out, err)
    assert "lease lost" in err
    [(first_id, first_status, first_counts)] = [
        r for r in q("SELECT run_id, status, counts FROM runs") if r[0] != _latest(q)]
    assert first_status == "abandoned" and "lease lost" in str(first_counts)
    second_id = _latest(q)
    assert q(f"SELECT status FROM runs WHERE run_id = '{second_id}'") == [("succeeded",)]
    rows = q("SELECT run_id, count(*), count(DISTINCT doc_id) FROM predictions GROUP BY run_id")
    assert rows == [(second_id, N_DOCS, N_DOCS)], (rows, first_id)
    assert q("SELECT run_id, status FROM tranches") == [(second_id, "completed")]
    assert q("SELECT count(*) FROM dead_letters")[0][0] == 0
    assert run_records  # the record module is what the rows above were written by


def _latest(q: Callable[[str], list[tuple[Any, ...]]]) -> str:
    return str(q("SELECT run_id FROM runs ORDER BY started_at DESC LIMIT 1")[0][0])


@pytest.mark.slow
def test_a_frozen_run_is_fenced_out_on_sqlite(registry_root: str, tmp_path: Path) -> None:
    _frozen_run_is_fenced_out(f"sqlite:///{tmp_path / 'f.db'}", registry_root, tmp_path)


@pytest.mark.slow
@pytest.mark.postgres
def test_a_frozen_run_is_fenced_out_on_postgresql(registry_root: str, tmp_path: Path,
                                                  pg_url: str) -> None:
    _frozen_run_is_fenced_out(pg_url, registry_root, tmp_path)
