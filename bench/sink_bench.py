"""Sink benchmark: beamscore's WriteToDatabase vs a naive executemany INSERT, into the
real PostgreSQL, side by side in one invocation; then a throttled run.

    python bench/sink_bench.py [--rows 500000] [--throttled-rows 50000] [--rate 5000]

(a) naive: one connection, ``executemany("INSERT INTO predictions VALUES (...)")``.
(p) the PostgreSQL ceiling for these rows: one COPY of all of them straight into the
    table from prebuilt tuples (no Beam, no batches, no conflict handling).
(b) beamscore: ``WriteToDatabase`` in a Beam pipeline (FnApiRunner, 1 worker), new
    keys: COPY straight into the table per ``batch_rows``. (b2) the same, 2 workers.
(br) beamscore, 1 worker, writing the same rows a second time (every key exists: the
    staged upsert path), timed on the second run.
(c) beamscore throttled at ``--rate`` rows/s, 2 workers: achieved rate and the worst
    1-second window, sampled from ``count(*)`` every 20 ms.
Each contender writes into its own fresh database, dropped afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import uuid
from typing import Any

import apache_beam as beam
import numpy as np
import pandas as pd
import psycopg
from apache_beam.options.pipeline_options import PipelineOptions

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from transforms.db import PREDICTION_COLUMNS, connect  # noqa: E402
from transforms.inference import PRED_LABEL, PRED_SCORE, PRED_TOP_K  # noqa: E402
from transforms.records import DOC_ID, METADATA, POSITION, RAW, DocBatch  # noqa: E402
from transforms.sink import RunContext, SinkSettings, WriteToDatabase  # noqa: E402

PG = os.environ.get("BEAMSCORE_TEST_PG", "postgresql://127.0.0.1:5432")
CTX = RunContext("bench-run", "bench", "1", "0" * 64, "2026-01-01T00:00:00+00:00")
TOP_K = json.dumps([["billing", 0.91], ["shipping", 0.05], ["returns", 0.02]])


def make_batch(i: int, size: int) -> DocBatch:
    """Input of the beamscore contenders, built inside the timed pipeline (about 0.6 s per
    500,000 rows here); the naive and ceiling contenders start from prebuilt tuples."""
    ids = [f"doc-{i:05d}-{j:06d}" for j in range(size)]
    frame = pd.DataFrame({
        DOC_ID: ids, POSITION: np.arange(1, size + 1), METADATA: [None] * size,
        RAW: [None] * size, PRED_LABEL: ["billing"] * size,
        PRED_SCORE: np.full(size, 0.91), PRED_TOP_K: [TOP_K] * size,
    })
    return DocBatch("2026-01-01", f"gs://bench/file-{i % 8}.jsonl", f"b{i:05d}", frame)


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


def naive(rows_total: int, batch: int, ceiling: bool = False) -> dict[str, Any]:
    """The naive executemany INSERT, or (``ceiling``) PostgreSQL's own bulk-load bound:
    one COPY of all the prebuilt rows straight into the table, no Beam, no batching."""
    db = Database()
    try:
        rows = []
        for i in range(rows_total // batch):
            b = make_batch(i, batch)
            f = b.frame
            rows.extend(zip(f[DOC_ID], [b.tranche] * batch, f[PRED_LABEL],
                            f[PRED_SCORE].astype(float), f[PRED_TOP_K], ["bench"] * batch,
                            ["1"] * batch, [CTX.model_sha256] * batch, [CTX.run_id] * batch,
                            [CTX.scored_at] * batch, [b.source_file] * batch, [None] * batch))
        sql = (f"INSERT INTO predictions ({', '.join(PREDICTION_COLUMNS)}) VALUES "
               f"({', '.join(['%s'] * len(PREDICTION_COLUMNS))})")
        started = time.perf_counter()
        with psycopg.connect(db.url) as conn, conn.cursor() as cur:
            if ceiling:
                with cur.copy(f"COPY predictions ({', '.join(PREDICTION_COLUMNS)}) "  # type: ignore[arg-type]
                              "FROM STDIN") as copy:
                    for r in rows:
                        copy.write_row(r)
            else:
                cur.executemany(sql, rows)  # type: ignore[arg-type]
        seconds = time.perf_counter() - started
        assert db.count() == rows_total
        return {"rows": rows_total, "seconds": seconds, "rows_per_s": rows_total / seconds}
    finally:
        db.drop()


def beamscore(rows_total: int, batch: int, workers: int, rate: float,
              sample: bool = False, rerun: bool = False) -> dict[str, Any]:
    db = Database()
    settings = SinkSettings(url=db.url, batch_rows=batch, max_rows_per_second=rate,
                            max_connections=max(1, workers))
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
        if sample:
            thread.start()
        for _ in range(2 if rerun else 1):  # a rerun writes the same keys again: upserts
            started = time.perf_counter()
            with beam.Pipeline(options=opts) as p:
                _ = (p | beam.Create(list(range(n_batches)), reshuffle=False)
                     | beam.Reshuffle()
                     | beam.Map(make_batch, batch)
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
    ap.add_argument("--throttled-rows", type=int, default=50_000)
    ap.add_argument("--rate", type=float, default=5000)
    ap.add_argument("--batch", type=int, default=5000, help="rows per input DocBatch")
    args = ap.parse_args()
    a = naive(args.rows, args.batch)
    p = naive(args.rows, args.batch, ceiling=True)
    b = beamscore(args.rows, args.batch, workers=1, rate=0)
    b2 = beamscore(args.rows, args.batch, workers=2, rate=0)
    br = beamscore(args.rows, args.batch, workers=1, rate=0, rerun=True)
    c = beamscore(args.throttled_rows, 500, workers=2, rate=args.rate, sample=True)
    print(f"{'contender':<34}{'rows':>9}{'seconds':>9}{'rows/s':>10}")
    for name, r in (("a naive executemany INSERT", a), ("p ceiling: one COPY, no Beam", p),
                    ("b beamscore sink, 1 worker", b),
                    ("b2 beamscore sink, 2 workers", b2),
                    ("br beamscore rerun (all upserts)", br)):
        print(f"{name:<34}{r['rows']:>9}{r['seconds']:>9.2f}{r['rows_per_s']:>10,.0f}")
    print(f"ratio b/a={b['rows_per_s'] / a['rows_per_s']:.2f} "
          f"p/a={p['rows_per_s'] / a['rows_per_s']:.2f} "
          f"b/p={b['rows_per_s'] / p['rows_per_s']:.2f} "
          f"b2/a={b2['rows_per_s'] / a['rows_per_s']:.2f}")
    print(f"throttled R={args.rate:.0f} rows/s, 2 workers, {c['rows']} rows: achieved "
          f"{c['achieved_rows_per_s']:,.0f} rows/s, worst 1-s window {c['worst_1s_window']} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
