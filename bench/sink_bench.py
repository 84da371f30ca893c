"""Sink benchmark: beamscore's database sink alone, from 1, 2, 4 and 8 writer processes,
against one raw bulk load of the same rows, for SQLite and PostgreSQL.

    python bench/sink_bench.py [--rows 1000000] [--writers 1,2,4,8]
                               [--backends sqlite,postgresql] [--batch 5000] [--batch-rows 5000]
                               [--repeat 1]

The rows have the product's shape: scored ``DocBatch``es (``sink_input``) of ``--batch``
rows, turned into ``predictions`` rows by the sink itself. Each writer count runs the
product's write DoFn (``transforms.write``: buffering, the rate limiter, the connection
slots, the session's writes, the backend's upsert, then each batch's Parquet file, into
the bench's temporary folder) in that many forked processes, each
given an equal share of the batches (built before the clock starts), all started
together; rows/s = all rows / (last writer's end - the common start), into a fresh
database, with ``sink.max_connections`` at its default (4, fewer than 8 writers).
Baselines, on the same rows as prebuilt tuples, into a fresh database:
- SQLite: one ``executemany`` of the plain ``INSERT`` in one transaction, one process.
- PostgreSQL: one ``COPY`` of all rows straight into the table, one process, in the
  text format (psycopg's default) and, as a second baseline, in the binary format the
  sink itself uses (``store.backends.pg_copy``).
Every run checks the table holds each row once. With ``--repeat R`` the baseline and
every writer count run in R interleaved rounds; figures are medians, ratios the median
of the ratios within a round. The writers are forked from a process that never held
the baseline's rows, with its objects frozen out of the garbage collector (as the fork
server's workers are): a collection in a writer then copies none of its pages.
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing
import os
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from typing import Any

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH_DIR)
sys.path[:0] = [REPO, BENCH_DIR]

import sink_input  # noqa: E402

from store.database import connect  # noqa: E402
from store.schema import PREDICTIONS  # noqa: E402
from store.session import DatabaseSettings  # noqa: E402
from transforms.records import DocBatch, RunContext, prediction_columns  # noqa: E402
from transforms.write import SinkSettings, WriteToDatabase  # noqa: E402

PG = os.environ.get("BEAMSCORE_TEST_PG", "postgresql://127.0.0.1:5432")
CTX = RunContext("bench-run", "bench", "1", "0" * 64, "2026-01-01T00:00:00+00:00")
COLS = ", ".join(PREDICTIONS.names)


class Target:
    """A fresh database of one backend, with the schema; dropped by ``drop``."""

    def __init__(self, backend: str, workdir: str):
        self.backend = backend
        if backend == "sqlite":
            self.name = os.path.join(workdir, f"{uuid.uuid4().hex[:10]}.db")
            self.url = f"sqlite:///{self.name}"
        else:
            import psycopg

            self.name = f"beamscore_bench_{uuid.uuid4().hex[:10]}"
            with psycopg.connect(f"{PG}/test", autocommit=True) as admin:
                admin.execute(f'CREATE DATABASE "{self.name}"')  # type: ignore[arg-type]
            self.url = f"{PG}/{self.name}"
        db = connect(self.url)
        db.init_schema()
        db.close()

    def count(self) -> int:
        db = connect(self.url)
        try:
            return int(db.execute("SELECT count(DISTINCT doc_id) FROM predictions")[0][0])
        finally:
            db.close()

    def drop(self) -> None:
        if self.backend == "sqlite":
            for suffix in ("", "-wal", "-shm"):
                if os.path.exists(self.name + suffix):
                    os.remove(self.name + suffix)
            return
        import psycopg

        with psycopg.connect(f"{PG}/test", autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE datname = %s", [self.name])
            admin.execute(f'DROP DATABASE IF EXISTS "{self.name}"')  # type: ignore[arg-type]


def raw_load(target: Target, batches: list[DocBatch], binary: bool = False) -> float:
    """Seconds of one raw bulk load of the batches' rows (built before the clock starts):
    SQLite executemany in one transaction, PG COPY. Run in a child process, so that the
    writers are forked from a parent that never held the rows."""
    fork = multiprocessing.get_context("fork")
    result = fork.Queue()
    proc = fork.Process(target=_raw_load, args=(target, batches, binary, result),
                        daemon=True)
    proc.start()
    proc.join(timeout=600)
    if proc.exitcode != 0:
        proc.terminate()
        raise RuntimeError(f"the baseline load failed (exit code {proc.exitcode})")
    return float(result.get(timeout=10))


def _raw_load(target: Target, batches: list[DocBatch], binary: bool, result: Any) -> None:
    rows = [r for b in batches for r in PREDICTIONS.rows(prediction_columns(b, CTX))]
    started = time.monotonic()
    if target.backend == "sqlite":
        conn = sqlite3.connect(target.name, isolation_level=None)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(f"INSERT INTO predictions ({COLS}) VALUES "
                         f"({', '.join(['?'] * len(PREDICTIONS.names))})", rows)
        conn.execute("COMMIT")
        conn.close()
    else:
        import psycopg

        from store.backends import pg_copy
        from store.backends.postgres import PostgresDialect

        with psycopg.connect(target.url) as pg:
            if binary:
                pg_copy.register(pg.adapters)  # before the cursor, which copies them
            with pg.cursor() as cur:
                if binary:
                    pg_copy.copy_rows(cur, "predictions", PREDICTIONS.columns, rows,
                                      PostgresDialect.types)
                else:
                    with cur.copy(f"COPY predictions ({COLS}) FROM STDIN") as copy:  # type: ignore[arg-type]
                        for r in rows:
                            copy.write_row(r)
    result.put(time.monotonic() - started)


def _writer(url: str, batches: list[DocBatch], state_dir: str, batch_rows: int, start: Any,
            ends: Any) -> None:
    """One writer process: the product's write DoFn over its share of the batches (its
    prediction files next to ``state_dir``)."""
    fn = WriteToDatabase(SinkSettings(DatabaseSettings(url, state_dir=state_dir,
                                                       batch_rows=batch_rows)), CTX,
                         os.path.join(os.path.dirname(state_dir), "files"))._fn
    fn.setup()
    start.wait(timeout=600)
    fn.start_bundle()
    for b in batches:
        for _ in fn.process(b):
            pass
    for _ in fn.finish_bundle():
        pass
    fn.teardown()
    ends.put((time.monotonic(), fn.waits.database))


def sink_run(target: Target, batches: list[DocBatch], writers: int, state_dir: str,
             batch_rows: int = 5000) -> tuple[float, float]:
    """(seconds, seconds the writers waited for the database, summed) of ``writers``
    forked processes writing ``batches`` through the sink (``sink.batch_rows``
    ``batch_rows``)."""
    fork = multiprocessing.get_context("fork")
    start, ends = fork.Barrier(writers + 1), fork.Queue()
    procs = [fork.Process(target=_writer, daemon=True,
                          args=(target.url, batches[i::writers], state_dir, batch_rows, start,
                                ends))
             for i in range(writers)]
    try:
        for proc in procs:
            proc.start()
        start.wait(timeout=600)
        started = time.monotonic()
        finished = [ends.get(timeout=600) for _ in procs]
        for proc in procs:
            proc.join(timeout=60)
            if proc.exitcode != 0:
                raise RuntimeError(f"a writer exited with {proc.exitcode}")
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
    return max(t for t, _ in finished) - started, sum(w for _, w in finished)


def _load_once(backend: str, batches: list[DocBatch], n: int, workdir: str,
               writers: int, batch_rows: int) -> tuple[float, float]:
    """(rows/s, seconds waited for the database) of one load into a fresh database:
    the raw baseline when ``writers`` is 0 (-1: PostgreSQL's binary COPY), else the sink
    from that many writers."""
    target = Target(backend, workdir)
    try:
        if writers <= 0:
            seconds, waited = raw_load(target, batches, binary=writers < 0), 0.0
        else:
            seconds, waited = sink_run(target, batches, writers,
                                       os.path.join(workdir, "state"), batch_rows)
        assert target.count() == n, "rows missing or written twice"
    finally:
        target.drop()
    return n / seconds, waited


def bench_backend(backend: str, batches: list[DocBatch], writer_counts: list[int],
                  workdir: str, repeat: int = 1, batch_rows: int = 5000) -> list[str]:
    """Rounds of the baseline and every writer count, interleaved (a drifting machine
    shifts all of them alike); each figure is the median over the rounds, and each
    ratio the median of the ratios within a round."""
    n = sum(len(b.frame) for b in batches)
    loads = [0, *([-1] if backend == "postgresql" else []), *writer_counts]
    rates: dict[int, list[float]] = {w: [] for w in loads}
    waits: dict[int, list[float]] = {w: [] for w in writer_counts}
    for r in range(repeat):
        for w in loads:
            rate, waited = _load_once(backend, batches, n, workdir, w, batch_rows)
            rates[w].append(rate)
            if w > 0:
                waits[w].append(waited)
            what = {0: "baseline", -1: "binary COPY"}.get(w, f"{w} writer(s)")
            print(f"  [{backend} round {r + 1}/{repeat}] {what}: {rate:,.0f} rows/s", flush=True)
    baseline = "one executemany transaction" if backend == "sqlite" else "one raw COPY"
    raw, one = rates[0], rates[writer_counts[0]]
    lines = [f"{backend}: {n:,} rows, median of {repeat} round(s); baseline {baseline}: "
             f"{statistics.median(raw):,.0f} rows/s"
             + (f"; one raw binary COPY: {statistics.median(rates[-1]):,.0f} rows/s"
                if -1 in rates else "")]
    for w in writer_counts:
        x = rates[w]
        binary = (f"  {statistics.median(a / b for a, b in zip(x, rates[-1])):5.2f}x binary"
                  if -1 in rates else "")
        lines.append(
            f"  {w} writer(s): {statistics.median(x):>10,.0f} rows/s "
            f"(min {min(x):,.0f})  "
            f"{statistics.median(a / b for a, b in zip(x, raw)):5.2f}x baseline{binary}  "
            f"{statistics.median(a / b for a, b in zip(x, one)):5.2f}x {writer_counts[0]} "
            f"writer(s)  waited for database {statistics.median(waits[w]):.1f}s")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--writers", default="1,2,4,8", help="writer process counts")
    ap.add_argument("--backends", default="sqlite,postgresql")
    ap.add_argument("--batch", type=int, default=5000, help="rows per input DocBatch")
    ap.add_argument("--batch-rows", type=int, default=5000,
                    help="the writers' sink.batch_rows (rows per write)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="interleaved rounds of every load (medians reported)")
    args = ap.parse_args()
    writers = [int(w) for w in args.writers.split(",")]
    if args.repeat < 1 or min(writers) < 1 or len(set(writers)) < len(writers):
        ap.error("--repeat must be >= 1 and --writers distinct counts >= 1")
    n_batches = args.rows // args.batch
    batches = [sink_input.make_batch(i, args.batch) for i in range(n_batches)]
    gc.freeze()  # no collection in a forked process touches (and copies) these objects
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPU(s)", flush=True)
    report = []
    with tempfile.TemporaryDirectory(prefix="beamscore-sink-bench-") as workdir:
        for backend in args.backends.split(","):
            report += bench_backend(backend, batches, writers, workdir, args.repeat,
                                    args.batch_rows)
    print("\n".join(report))
    print(f"load average {os.getloadavg()[0]:.2f} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
