"""The rate limit holds for every limit and batch size: no 1-second window of commits
above R (SQLite, the real CLI), and the limiter does not starve the writers.

The exact pace (R on average) is asserted on a patched clock in
tests/store/test_limits.py: on a real, loaded host every commit takes longer, and the
limiter, which counts a write in flight as committing now, rightly pays for that time,
so the throughput of a run here says more about the host than about the limiter."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from landing.samples import make_docs, write_tranche
from tests.pipelines.helpers import run_cli

DAY = "2026-05-01"


class _Counter(threading.Thread):
    """Samples the number of prediction rows every 20 ms: (before, after, count), the
    count being the committed rows at some moment between the two clock readings (a
    loaded host can stall a query)."""

    def __init__(self, db: Path):
        super().__init__(daemon=True)
        self.db, self.stop = db, threading.Event()
        self.samples: list[tuple[float, float, int]] = []

    def run(self) -> None:
        while not self.stop.is_set():
            before = time.monotonic()
            try:
                with sqlite3.connect(self.db, timeout=5) as conn:
                    n = conn.execute("SELECT count(*) FROM predictions").fetchone()[0]
            except sqlite3.OperationalError:
                n = 0
            self.samples.append((before, time.monotonic(), n))
            time.sleep(0.02)


def _worst_window(samples: list[tuple[float, float, int]]) -> int:
    """The most rows seen committed between two counts taken surely within 1 s."""
    worst = 0
    for i, (start, _, v0) in enumerate(samples):
        later = [v for _, end, v in samples[i:] if end - start <= 1.0]
        if later:
            worst = max(worst, later[-1] - v0)
    return worst


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("rate, docs", [(300, 1200), (5000, 20000), (50000, 60000)])
def test_no_window_exceeds_the_rate_with_the_default_batch_rows(
        registry_root: str, tmp_path: Path, rate: int, docs: int, workers: int) -> None:
    root = tmp_path / "landing"
    all_docs = list(make_docs(docs, seed=rate, prefix="rl", min_chars=50, max_chars=120))
    for i in range(4):
        write_tranche(str(root), DAY, all_docs[i::4], "jsonl", name=f"p{i}")
    db = tmp_path / "s.db"
    state = tmp_path / "state"
    counter = _Counter(db)
    counter.start()
    result = run_cli("score", "--date", DAY, "--input-root", str(root), "--registry",
                     registry_root, "--db", f"sqlite:///{db}", "--output-dir",
                     str(tmp_path / "out"), "--workers", str(workers),
                     "--sink-max-rows-per-second", str(rate), "--sink-state-dir", str(state))
    counter.stop.set()
    counter.join()
    assert result.rc == 0, result.err
    samples = counter.samples
    assert samples[-1][2] == docs
    worst = _worst_window(samples)
    first = next(after for _, after, v in samples if v > 0)
    last = next(after for _, after, v in samples if v == docs)
    average = docs / max(last - first, 1e-3)
    with sqlite3.connect(db) as conn:
        summary = json.loads(conn.execute("SELECT counts FROM runs").fetchone()[0])
    assert "rate_limited_ms" in summary["total"]  # the summary shows "rate-limited"
    throttled = summary["total"].get("throttled_ms", 0) / 1000
    print(f"R={rate} workers={workers}: worst 1-s window {worst}, average {average:.0f} "
          f"rows/s, throttled {throttled:.1f}s")
    assert worst <= rate, f"{worst} rows committed within one second"
    if throttled / workers > 0.5 * (last - first):  # the limiter, not the work, set the pace
        assert average >= 0.5 * rate, f"average {average:.0f} rows/s: the writers starve"
    assert list(state.iterdir()) == [], "the limiter's state files are removed after the run"
