"""Write scored batches and dead letters: Parquet/JSONL files and the database.

``WriteToDatabase`` follows Beam's datastoreio write: a batching DoFn that opens its
client in ``setup``, buffers rows up to ``batch_rows``/``batch_bytes``, flushes in
``finish_bundle``, throttles through a Beam ``RateLimiter`` (``transforms.limits``),
holds a connection slot while connected (the ``max_connections`` cap), retries
transient errors with exponential backoff and jitter, and only issues idempotent
upserts. Time spent throttled, waiting for a slot or backing off is counted in
``cumulativeThrottlingSeconds`` and reported in the run summary. Rows the
database rejects permanently are isolated by bisection and dead-lettered (stage
``sink``) with the database's message.

File outputs are named after the deterministic ``batch_key`` (predictions) or a
content hash (dead letters), so a retried bundle or a rerun overwrites instead of
adding files.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import random
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from transforms.db import Database, PermanentDataError, TransientDatabaseError, connect, redact
from transforms.inference import PRED_LABEL, PRED_SCORE, PRED_TOP_K
from transforms.limits import (
    FileSlots,
    MachineRateLimiter,
    RedisRateLimiter,
    RedisSlots,
    ThrottleTimer,
)
from transforms.read import DEAD_LETTERS, STATS
from transforms.records import DOC_ID, LABEL, METADATA, POSITION, DocBatch, dead_letter

_LOG = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class RunContext:
    """Lineage stamped on every output row."""

    run_id: str
    model_name: str
    model_version: str
    model_sha256: str
    scored_at: str


@dataclass(frozen=True)
class SinkSettings:
    url: str
    batch_rows: int = 5000
    batch_bytes: int = 16 << 20
    max_rows_per_second: float = 0.0
    machines: int = 1  # machines sharing max_rows_per_second (each gets an equal share)
    statement_timeout_ms: int = 30_000
    max_retries: int = 8
    password_env: str = "PGPASSWORD"
    payload_limit: int = 2000
    max_connections: int = 4
    redis_url: str = ""  # job-wide limiter and connection slots (autoscaled jobs)
    progress_seconds: float = 30.0  # log rows written at least this often


def _windowed(value: Any) -> WindowedValue:
    """Outputs of ``finish_bundle`` must carry their window explicitly."""
    return WindowedValue(value, MIN_TIMESTAMP, (GlobalWindow(),))


# ------------------------------------------------------------ sessions and retries
def with_retries(fn: Callable[[], T], *, max_retries: int, on_wait: Callable[[float], None],
                 base: float = 0.2, cap: float = 30.0) -> T:
    """Call ``fn``; on TransientDatabaseError back off exponentially with full jitter."""
    attempt = 0
    while True:
        try:
            return fn()
        except TransientDatabaseError as exc:
            attempt += 1
            if attempt > max_retries:
                raise
            delay = random.uniform(base, min(cap, base * 2 ** attempt))
            _LOG.warning("transient database error (attempt %d/%d, retry in %.2fs): %s",
                         attempt, max_retries, delay, exc)
            on_wait(delay)
            time.sleep(delay)


def rate_limiter(s: SinkSettings) -> MachineRateLimiter | RedisRateLimiter:
    """Job-wide in Redis when configured; else this machine's share of the budget."""
    if s.redis_url:
        return RedisRateLimiter(s.redis_url, redact(s.url), s.max_rows_per_second)
    return MachineRateLimiter(s.url, s.max_rows_per_second / max(1, s.machines))


class DatabaseSession:
    """One connection held under a connection slot, reopened after transient errors.

    ``run(fn)`` calls ``fn(db)`` with retries (the first connection creates or migrates
    the schema); waiting for a slot or backing off is
    added to the throttle timer. ``close()`` closes the connection and frees the slot.
    """

    def __init__(self, s: SinkSettings, timer: ThrottleTimer):
        self._s = s
        self._timer = timer
        self._db: Database | None = None
        self._slots: FileSlots | RedisSlots | None = None
        self._schema_ready = False

    def _connect(self) -> Database:
        if self._db is None:
            if self._slots is None:
                self._slots = (RedisSlots(self._s.redis_url, self._s.url, self._s.max_connections)
                               if self._s.redis_url else
                               FileSlots(self._s.url, self._s.max_connections))
                self._timer.add(self._slots.acquire())
            self._db = connect(self._s.url, password_env=self._s.password_env,
                               statement_timeout_ms=self._s.statement_timeout_ms)
            if not self._schema_ready:
                # The sink creates/migrates its schema itself (idempotent, serialised by
                # the backend), so WriteToDatabase works without `beamscore db init`.
                self._db.init_schema()
                self._schema_ready = True
        return self._db

    def _drop_connection(self, waited: float) -> None:
        self._timer.add(waited)
        if self._db is not None:
            try:
                self._db.close()
            except Exception:  # noqa: BLE001 - closing a broken connection may fail
                pass
            self._db = None

    def run(self, fn: Callable[[Database], T]) -> T:
        return with_retries(lambda: fn(self._connect()), max_retries=self._s.max_retries,
                            on_wait=self._drop_connection)

    def close(self) -> None:
        self._drop_connection(0.0)
        if self._slots is not None:
            self._slots.release()
            self._slots = None


# ------------------------------------------------------------------ the DB writer
def prediction_rows(batch: DocBatch, ctx: RunContext) -> list[tuple[Any, ...]]:
    f = batch.frame
    n = len(f)
    return list(zip(
        f[DOC_ID].tolist(), [batch.tranche] * n, f[PRED_LABEL].tolist(),
        f[PRED_SCORE].astype(float).tolist(), f[PRED_TOP_K].tolist(),
        [ctx.model_name] * n, [ctx.model_version] * n, [ctx.model_sha256] * n,
        [ctx.run_id] * n, [ctx.scored_at] * n, [batch.source_file] * n,
        f[METADATA].tolist(),
    ))


class _WritePredictionsFn(beam.DoFn):
    """Buffers rows, flushes upserts of ``batch_rows``/``batch_bytes``; emits stats and
    the rows the database rejected. Holds its connection (and slot) for one bundle."""

    def __init__(self, settings: SinkSettings, ctx: RunContext):
        self._s = settings
        self._ctx = ctx
        self._written = Metrics.counter("beamscore", "rows_written")

    def setup(self) -> None:
        self._limiter = rate_limiter(self._s)
        self._timer = ThrottleTimer()
        self._session = DatabaseSession(self._s, self._timer)
        self._last_log = time.monotonic()
        self._rows_total = 0

    def start_bundle(self) -> None:
        self._rows: list[tuple[Any, ...]] = []
        # Aligned with _rows, one entry per slice of an input batch (not per row):
        # (tranche, positions, raw payloads), for stats and dead letters.
        self._segments: list[tuple[str, list[int], list[Any]]] = []
        self._bytes = 0

    def process(self, batch: DocBatch) -> Iterator[Any]:
        rows = prediction_rows(batch, self._ctx)
        n = len(rows)
        if not n:
            return
        positions = batch.frame[POSITION].tolist()
        raws = batch.frame["raw"].tolist()
        # Bytes per row, estimated per batch: ids, top-k JSON, source file, fixed columns.
        per_row = (sum(map(len, (r[0] for r in rows))) + sum(map(len, (r[4] for r in rows)))
                   ) // n + len(batch.source_file) + 200
        start = 0
        while start < n:
            room = min(self._s.batch_rows - len(self._rows),
                       -(-(self._s.batch_bytes - self._bytes) // per_row))
            end = min(n, start + max(1, room))
            self._rows.extend(rows[start:end])
            self._segments.append((batch.tranche, positions[start:end], raws[start:end]))
            self._bytes += (end - start) * per_row
            start = end
            if len(self._rows) >= self._s.batch_rows or self._bytes >= self._s.batch_bytes:
                yield from self._flush()

    def finish_bundle(self) -> Iterator[Any]:
        try:
            for out in self._flush():
                yield beam.pvalue.TaggedOutput(out.tag, _windowed(out.value))
        finally:
            self._session.close()

    def teardown(self) -> None:
        self._session.close()

    def _flush(self) -> Iterator[Any]:
        rows, segments = self._rows, self._segments
        self._rows, self._segments, self._bytes = [], [], 0
        if not rows:
            return
        throttled_before = self._timer.total_seconds
        rejected: dict[int, str] = {}
        self._write_isolating(rows, 0, len(rows), rejected)
        written: dict[str, int] = defaultdict(int)
        scored: dict[str, int] = defaultdict(int)
        offset = 0
        for tranche, positions, raws in segments:
            k = len(positions)
            scored[tranche] += k
            written[tranche] += k
            for i in (j for j in rejected if offset <= j < offset + k):
                written[tranche] -= 1
                yield beam.pvalue.TaggedOutput(DEAD_LETTERS, dead_letter(
                    tranche=tranche, source_file=rows[i][10], position=positions[i - offset],
                    stage="sink", reason=f"database rejected the row: {rejected[i]}"[:1000],
                    payload=raws[i - offset], payload_limit=self._s.payload_limit,
                ))
            offset += k
        self._written.inc(len(rows) - len(rejected))
        throttled_ms = int((self._timer.total_seconds - throttled_before) * 1000)
        for i, tranche in enumerate(scored):
            stats = {"scored": scored[tranche], "written": written[tranche]}
            if i == 0 and throttled_ms:
                stats["throttled_ms"] = throttled_ms
            yield beam.pvalue.TaggedOutput(STATS, (tranche, stats))
        self._log_progress(len(rows))

    def _log_progress(self, n: int) -> None:
        self._rows_total += n
        if time.monotonic() - self._last_log >= self._s.progress_seconds:
            self._last_log = time.monotonic()
            _LOG.info("sink progress: %d rows written by this worker, %.1fs throttled",
                      self._rows_total, self._timer.total_seconds)

    def _write_isolating(self, rows: Sequence[tuple[Any, ...]], lo: int, hi: int,
                         rejected: dict[int, str]) -> None:
        """Write rows[lo:hi]; on a permanent error bisect down to the rejected rows."""
        part = rows[lo:hi]
        self._limiter.allow(hits_added=len(part))
        self._timer.add(self._limiter.last_wait)
        try:
            self._session.run(lambda db: db.upsert_predictions(part))
            return
        except PermanentDataError as exc:
            if hi - lo == 1:
                rejected[lo] = str(exc)
                return
        finally:
            self._limiter.done()
        mid = (lo + hi) // 2
        self._write_isolating(rows, lo, mid, rejected)
        self._write_isolating(rows, mid, hi, rejected)


class WriteToDatabase(beam.PTransform):
    """Scored DocBatches -> upserted ``predictions`` rows.

    Outputs: ``stats`` ((tranche, {"scored", "written"})) and ``dead_letters`` (rows the
    database rejected permanently).
    """

    def __init__(self, settings: SinkSettings, ctx: RunContext):
        super().__init__()
        self._settings = settings
        self._ctx = ctx

    def expand(self, batches: beam.PCollection) -> beam.pvalue.DoOutputsTuple:
        return batches | "Upsert predictions" >> beam.ParDo(
            _WritePredictionsFn(self._settings, self._ctx)
        ).with_outputs(STATS, DEAD_LETTERS, main="unused")


# ------------------------------------------------------------------ dead letters
class _WriteDeadLettersFn(beam.DoFn):
    """Buffers up to FLUSH_AT dead letters; writes one JSONL file per tranche + DB rows.

    File names hash the content, so a retried bundle rewrites the same files.
    """

    FLUSH_AT = 10_000

    def __init__(self, settings: SinkSettings, run_id: str, output_dir: str):
        self._s = settings
        self._run_id = run_id
        self._output_dir = output_dir.rstrip("/")

    def start_bundle(self) -> None:
        self._buffer: list[dict[str, Any]] = []

    def process(self, dl: dict[str, Any]) -> Iterator[Any]:
        self._buffer.append(dl)
        if len(self._buffer) >= self.FLUSH_AT:  # memory stays bounded on bad inputs
            for out in self._flush():
                yield out.value

    def finish_bundle(self) -> Iterator[WindowedValue]:
        yield from self._flush()

    def _flush(self) -> Iterator[WindowedValue]:
        buffer, self._buffer = self._buffer, []
        if not buffer:
            return
        by_tranche: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for dl in buffer:
            by_tranche[dl["tranche"]].append(dl)
        session = DatabaseSession(self._s, ThrottleTimer())
        try:
            for tranche, dls in sorted(by_tranche.items()):
                dls.sort(key=lambda d: (d["source_file"], d["position"], d["stage"]))
                lines = "".join(json.dumps({"run_id": self._run_id, **d}, ensure_ascii=False)
                                + "\n" for d in dls).encode()
                digest = hashlib.sha256(lines).hexdigest()[:16]
                path = f"{self._output_dir}/dt={tranche}/dead_letters-{self._run_id}-{digest}.jsonl"
                write_atomically(path, lines)
                rows = [(self._run_id, d["tranche"], d["source_file"], d["position"],
                         d["stage"], d["reason"], d["payload"]) for d in dls]
                session.run(functools.partial(_upsert_dead_letters, rows))
                by_stage: dict[str, int] = defaultdict(int)
                for d in dls:
                    by_stage[f"dead_{d['stage']}"] += 1
                yield _windowed((tranche, {"dead_lettered": len(dls), **by_stage}))
        finally:
            session.close()


def _upsert_dead_letters(rows: list[tuple[Any, ...]], db: Database) -> int:
    return db.upsert_dead_letters(rows)


class WriteDeadLetters(beam.PTransform):
    """Dead letters -> ``dead_letters`` table + JSONL files; outputs per-tranche stats."""

    def __init__(self, settings: SinkSettings, run_id: str, output_dir: str):
        super().__init__()
        self._fn = _WriteDeadLettersFn(settings, run_id, output_dir)

    def expand(self, dead: beam.PCollection) -> beam.PCollection:
        return dead | "Store dead letters" >> beam.ParDo(self._fn)


# ------------------------------------------------------------------ Parquet files
PARQUET_SCHEMA = pa.schema([
    ("doc_id", pa.string()), ("tranche", pa.string()), ("label", pa.string()),
    ("score", pa.float64()), ("top_k", pa.string()), ("model_name", pa.string()),
    ("model_version", pa.string()), ("model_sha256", pa.string()), ("run_id", pa.string()),
    ("scored_at", pa.string()), ("source_file", pa.string()), ("position", pa.int64()),
    ("true_label", pa.string()), ("metadata", pa.string()),
])


def write_atomically(path: str, data: bytes) -> None:
    """Local: write a temp file then rename. GCS: an upload is atomic on close."""
    if path.startswith("gs://"):
        with FileSystems.create(path) as fh:
            fh.write(data)
        return
    tmp = f"{path}.tmp-{random.getrandbits(48):012x}"
    with FileSystems.create(tmp) as fh:
        fh.write(data)
    FileSystems.rename([tmp], [path])


class _WriteParquetFn(beam.DoFn):
    def __init__(self, output_dir: str, ctx: RunContext):
        self._output_dir = output_dir.rstrip("/")
        self._ctx = ctx

    def process(self, batch: DocBatch) -> Iterator[DocBatch]:
        f = batch.frame
        n = len(f)
        c = self._ctx
        labels = [None if v is None or v != v else str(v) for v in f[LABEL].tolist()]
        table = pa.table({
            "doc_id": f[DOC_ID].tolist(), "tranche": [batch.tranche] * n,
            "label": f[PRED_LABEL].tolist(), "score": f[PRED_SCORE].to_numpy(),
            "top_k": f[PRED_TOP_K].tolist(), "model_name": [c.model_name] * n,
            "model_version": [c.model_version] * n, "model_sha256": [c.model_sha256] * n,
            "run_id": [c.run_id] * n, "scored_at": [c.scored_at] * n,
            "source_file": [batch.source_file] * n, "position": f[POSITION].to_numpy(),
            "true_label": labels, "metadata": f[METADATA].tolist(),
        }, schema=PARQUET_SCHEMA)
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, compression="zstd")
        path = (f"{self._output_dir}/dt={batch.tranche}/predictions-{c.model_name}-"
                f"v{c.model_version}-{batch.batch_key}.parquet")
        write_atomically(path, sink.getvalue().to_pybytes())
        yield batch


class WritePredictionFiles(beam.PTransform):
    """Scored DocBatches -> one Parquet file each; passes the batches on."""

    def __init__(self, output_dir: str, ctx: RunContext):
        super().__init__()
        self._fn = _WriteParquetFn(output_dir, ctx)

    def expand(self, batches: beam.PCollection) -> beam.PCollection:
        return batches | "Write Parquet" >> beam.ParDo(self._fn).with_output_types(DocBatch)
