"""Sink benchmark: beamscore's WriteToDatabase vs a naive executemany INSERT, into the
real PostgreSQL, side by side in one invocation; then a throttled run.

    python bench/sink_bench.py [--rows 500000] [--repeat 3] [--throttled-rows 50000]
                               [--rate 5000]

Rounds of a, p, b run interleaved ``--repeat`` times, in rotated order (medians
reported; the machine is shared and noisy), then p2, b2, br and c once; each fresh
database gets a CHECKPOINT before its timing starts. Every contender starts from the
same prebuilt rows: tuples for a, p and p2, the equivalent scored DocBatches for b, br.
(a) naive: one connection, ``executemany("INSERT INTO predictions VALUES (...)")``
    (psycopg 3 pipelines it: one round trip per batch of statements, not per row).
(p) the PostgreSQL ceiling for these rows: one COPY of all of them straight into the
    table (no Beam, no batches, no conflict handling). (p2) the same rows split over two
    processes, one COPY each, started together: the server's ceiling on both cores.
(b) beamscore: ``WriteToDatabase`` in a Beam pipeline (FnApiRunner, 1 worker), new
    keys: COPY straight into the table per ``batch_rows``; timed from pipeline
    construction to the end of ``run`` (Beam start-up and turning the batches' frames
    into row tuples included). (b2) the same, 2 workers (each
    builds its own input, inside the timed run).
(br) beamscore, 1 worker, writing the same rows a second time (every key exists: the
    staged upsert path), timed on the second run.
(c) beamscore throttled at ``--rate`` rows/s, 2 workers: achieved rate and the worst
    1-second window, sampled from ``count(*)`` every 20 ms.
Each contender writes into its own fresh database, dropped afterwards.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import threading
import time
import uuid
from typing import Any

import apache_beam as beam
import psycopg
from apache_beam.options.pipeline_options import PipelineOptions

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH_DIR)
sys.path[:0] = [REPO, BENCH_DIR]
# Worker subprocesses (b2) must import sink_input and the project as well.
os.environ["PYTHONPATH"] = os.pathsep.join(
    [REPO, BENCH_DIR] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])

import sink_input  # noqa: E402

from store.database import connect  # noqa: E402
from store.schema import PREDICTIONS  # noqa: E402
from store.session import DatabaseSettings  # noqa: E402
from transforms.records import RunContext, prediction_columns  # noqa: E402
from transforms.write import SinkSettings, WriteToDatabase  # noqa: E402

PG = os.environ.get("BEAMSCORE_TEST_PG", "postgresql://127.0.0.1:5432")
CTX = RunContext("bench-run", "bench", "1", "0" * 64, "2026-01-01T00:00:00+00:00")
COPY_SQL = f"COPY predictions ({', '.join(PREDICTIONS.names)}) FROM STDIN"


class Database:
    def __init__(self) -> None:
        self.name = f"beamscore_bench_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(f"{PG}/test", autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{self.name}"')  # type: ignore[arg-type]
        self.url = f"{PG}/{self.name}"
        db = connect(self.url)
        db.init_schema()
        db.close()

    def count(self) -> int:
        with psycopg.connect(self.url) as conn:
            row = conn.execute("SELECT count(*) FROM predictions").fetchone()
            return int(row[0]) if row else 0

    def drop(self) -> None:
        with psycopg.connect(f"{PG}/test", autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE datname = %s", [self.name])
            admin.execute(f'DROP DATABASE IF EXISTS "{self.name}"')  # type: ignore[arg-type]


def all_rows(n_batches: int, batch: int) -> list[tuple[Any, ...]]:
    """The rows of the prebuilt batches, as the sink itself turns them into tuples."""
    rows: list[tuple[Any, ...]] = []
    for i in range(n_batches):
        rows.extend(PREDICTIONS.rows(prediction_columns(sink_input.batch(i, batch), CTX)))
    return rows


def _copy(url: str, rows: list[tuple[Any, ...]]) -> None:
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        with cur.copy(COPY_SQL) as copy:  # type: ignore[arg-type]
            for r in rows:
                copy.write_row(r)


def _copy_half(url: str, rows: list[tuple[Any, ...]], start: Any, ends: Any) -> None:
    """One of p2's processes (forked: ``rows`` is inherited, not pickled)."""
    start.wait(timeout=600)
    _copy(url, rows)
    ends.put(time.monotonic())  # CLOCK_MONOTONIC: comparable across processes


def naive(rows: list[tuple[Any, ...]], kind: str) -> dict[str, Any]:
    """a: the naive executemany INSERT; p: one COPY of all rows; p2: two COPYs at once."""
    db = Database()
    try:
        with psycopg.connect(db.url, autocommit=True) as conn:
            conn.execute("CHECKPOINT")  # the previous contender's writes, not timed here
        started = time.monotonic()
        if kind == "p2":
            fork = multiprocessing.get_context("fork")
            start, ends = fork.Barrier(3), fork.Queue()
            half = len(rows) // 2
            procs = [fork.Process(target=_copy_half, args=(db.url, part, start, ends),
                                  daemon=True)
                     for part in (rows[:half], rows[half:])]
            try:
                for proc in procs:
                    proc.start()
                start.wait(timeout=600)
                started = time.monotonic()
                finished = [ends.get(timeout=600) for _ in procs]
                for proc in procs:
                    proc.join(timeout=60)
                    if proc.exitcode != 0:
                        raise RuntimeError(f"p2: a COPY process exited with {proc.exitcode}")
            finally:
                for proc in procs:
                    if proc.is_alive():
                        proc.terminate()
            seconds = max(finished) - started
        else:
            if kind == "p":
                _copy(db.url, rows)
            else:
                sql = (f"INSERT INTO predictions ({', '.join(PREDICTIONS.names)}) VALUES "
                       f"({', '.join(['%s'] * len(PREDICTIONS.names))})")
                with psycopg.connect(db.url) as conn, conn.cursor() as cur:
                    cur.executemany(sql, rows)  # type: ignore[arg-type]
            seconds = time.monotonic() - started
        assert db.count() == len(rows)
        return {"rows": len(rows), "seconds": seconds, "rows_per_s": len(rows) / seconds}
    finally:
        db.drop()


def beamscore(rows_total: int, batch: int, workers: int, rate: float,
              sample: bool = False, rerun: bool = False) -> dict[str, Any]:
    db = Database()
    settings = SinkSettings(DatabaseSettings(db.url, max_connections=max(1, workers),
                                             batch_rows=batch, max_rows_per_second=rate))
    samples: list[tuple[float, int]] = []
    stop = threading.Event()

    def sampler() -> None:
        with psycopg.connect(db.url, autocommit=True) as conn:
            while not stop.is_set():
                row = conn.execute("SELECT count(*) FROM predictions").fetchone()
                samples.append((time.monotonic(), int(row[0]) if row else 0))
                time.sleep(0.02)

    thread = threading.Thread(target=sampler, daemon=True)
    try:
        opts = PipelineOptions(runner="FnApiRunner", direct_num_workers=workers,
                               direct_running_mode="multi_processing" if workers > 1
                               else "in_memory")
        n_batches = rows_total // batch
        with psycopg.connect(db.url, autocommit=True) as conn:
            conn.execute("CHECKPOINT")  # the previous contender's writes, not timed here
        if sample:
            thread.start()
        for _ in range(2 if rerun else 1):  # a rerun writes the same keys again: upserts
            started = time.perf_counter()
            with beam.Pipeline(options=opts) as p:
                _ = (p | beam.Create(list(range(n_batches)), reshuffle=False)
                     | beam.Reshuffle()
                     | beam.Map(sink_input.batch, batch)
                     | WriteToDatabase(settings, CTX))
            seconds = time.perf_counter() - started
        stop.set()
        assert db.count() == rows_total, "rows missing"
        out: dict[str, Any] = {"rows": rows_total, "seconds": seconds,
                               "rows_per_s": rows_total / seconds}
        if sample:
            thread.join()
            worst = 0
            for i, (t0, v0) in enumerate(samples):
                later = [v for t, v in samples[i:] if t - t0 <= 1.0]
                worst = max(worst, later[-1] - v0)
            # From the first commit seen to the last: rows committed after the first one.
            t0, v0 = next((t, v) for t, v in samples if v > 0)
            last = next(t for t, v in samples if v == rows_total)
            out["achieved_rows_per_s"] = (rows_total - v0) / max(1e-9, last - t0)
            out["worst_1s_window"] = worst
        return out
    finally:
        stop.set()
        db.drop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=500_000)
    ap.add_argument("--repeat", type=int, default=3, help="interleaved rounds of a, p, b")
    ap.add_argument("--throttled-rows", type=int, default=50_000)
    ap.add_argument("--rate", type=float, default=5000)
    ap.add_argument("--batch", type=int, default=5000, help="rows per input DocBatch")
    args = ap.parse_args()
    n_batches = args.rows // args.batch
    sink_input.prebuild(n_batches, args.batch)
    rows = all_rows(n_batches, args.batch)
    rounds: dict[str, list[dict[str, Any]]] = {"a": [], "p": [], "b": []}
    run = {"a": lambda: naive(rows, "a"), "p": lambda: naive(rows, "p"),
           "b": lambda: beamscore(len(rows), args.batch, workers=1, rate=0)}
    order = list(run)
    for k in range(args.repeat):
        for name in order[k % 3:] + order[:k % 3]:  # rotated: a,p,b then p,b,a then b,a,p
            rounds[name].append(run[name]())
        print(f"round {k + 1}/{args.repeat}: " + "  ".join(
            f"{name} {r[-1]['rows_per_s']:,.0f}" for name, r in rounds.items()), flush=True)
    med = {name: statistics.median(r["rows_per_s"] for r in rs) for name, rs in rounds.items()}
    once = {"p2": naive(rows, "p2"),
            "b2": beamscore(len(rows), args.batch, workers=2, rate=0),
            "br": beamscore(len(rows), args.batch, workers=1, rate=0, rerun=True)}
    c = beamscore(args.throttled_rows, 500, workers=2, rate=args.rate, sample=True)
    print(f"{'contender':<40}{'rows':>9}{'rows/s':>10}")
    labels = {"a": "a naive executemany INSERT", "p": "p ceiling: one COPY, no Beam",
              "b": "b beamscore sink, 1 worker", "p2": "p2 ceiling: two COPYs at once",
              "b2": "b2 beamscore sink, 2 workers", "br": "br beamscore rerun (all upserts)"}
    for name in ("a", "p", "b"):
        print(f"{labels[name] + f' (median of {args.repeat})':<40}{len(rows):>9}"
              f"{med[name]:>10,.0f}")
    for name, r in once.items():
        print(f"{labels[name]:<40}{r['rows']:>9}{r['rows_per_s']:>10,.0f}")
    per_round = ", ".join(f"{b['rows_per_s'] / a['rows_per_s']:.2f}"
                          for a, b in zip(rounds["a"], rounds["b"]))
    print(f"ratio b/a={med['b'] / med['a']:.2f} (rounds: {per_round}) "
          f"p/a={med['p'] / med['a']:.2f} p2/a={once['p2']['rows_per_s'] / med['a']:.2f} "
          f"b/p={med['b'] / med['p']:.2f}")
    print(f"throttled R={args.rate:.0f} rows/s, 2 workers, {c['rows']} rows: achieved "
          f"{c['achieved_rows_per_s']:,.0f} rows/s, worst 1-s window {c['worst_1s_window']} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
