"""Write to the database: scored DocBatches in, ``predictions`` rows upserted.

``WriteToDatabase`` follows Beam's datastoreio write: a batching DoFn that opens its
session in ``setup``, buffers rows up to ``batch_rows``/``batch_bytes``, flushes in
``finish_bundle``, throttles through a rate limiter (``store.limits``), holds a
connection slot while connected (the ``max_connections`` cap), retries transient
errors with exponential backoff and jitter, and only issues idempotent upserts. Time
spent throttled, waiting for a slot or backing off is counted in
``cumulativeThrottlingSeconds`` and reported in the run summary. Rows the database
rejects permanently are isolated by bisection and dead-lettered (stage ``sink``) with
the database's message.

With a rate limit R, no single write is larger than ``write_size`` (a quarter of this
machine's share of R, at most ``batch_rows``), so that no 1-second window of commits
exceeds R whatever R and ``batch_rows`` are. Every write also emits the ids it wrote
(``IDS``) for ``transforms.dedupe``.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from store.database import PermanentDataError
from store.schema import PREDICTIONS
from store.session import DatabaseSession, DatabaseSettings, rate_limiter
from transforms.dedupe import IdIndex, id_hashes
from transforms.records import (
    DEAD_LETTERS,
    RAW,
    STATS,
    DocBatch,
    RunContext,
    dead_letter,
    prediction_columns,
)

_LOG = logging.getLogger(__name__)
IDS = "ids"


@dataclass(frozen=True)
class SinkSettings:
    """The write DoFns' settings: ``database`` carries the URL and every key of the
    ``sink`` section (``store.settings.SinkConfig``); the rest is what a run derives."""

    database: DatabaseSettings
    machines: int = 1  # machines sharing max_rows_per_second (each gets an equal share)
    payload_limit: int = 2000  # validation.max_payload_chars
    progress_seconds: float = 30.0  # log rows written at least this often

    @property
    def batch_rows(self) -> int:
        return self.database.batch_rows

    @property
    def batch_bytes(self) -> int:
        return self.database.batch_bytes

    @property
    def max_rows_per_second(self) -> float:
        return self.database.max_rows_per_second

    @property
    def write_size(self) -> int:
        """Rows per database write: ``batch_rows``, and a quarter of this machine's share
        of the rate limit when one is set (never more rows at once than R allows)."""
        if self.max_rows_per_second <= 0:
            return self.batch_rows
        share = self.max_rows_per_second / max(1, self.machines)
        return max(1, min(self.batch_rows, int(share // 4)))


class ThrottleTimer:
    """Counts throttled time: whole seconds into ``cumulativeThrottlingSeconds`` (Beam's
    convention, read by Dataflow's autoscaler) and milliseconds for the run summary."""

    def __init__(self, namespace: str = "beamscore"):
        self._seconds = Metrics.counter(namespace, "cumulativeThrottlingSeconds")
        self._ms = Metrics.counter(namespace, "throttled_ms")
        self._carry = 0.0
        self.total_seconds = 0.0

    def add(self, seconds: float) -> None:
        if seconds <= 0:
            return
        self.total_seconds += seconds
        self._ms.inc(int(seconds * 1000))
        self._carry += seconds
        whole = int(self._carry)
        if whole:
            self._seconds.inc(whole)
            self._carry -= whole


def windowed(value: Any) -> WindowedValue:
    """Outputs of ``finish_bundle`` must carry their window explicitly."""
    return WindowedValue(value, MIN_TIMESTAMP, (GlobalWindow(),))


@dataclass
class _Segment:
    """A slice of one input batch in the write buffer, for stats, ids and dead letters."""

    tranche: str
    source_file: str
    batch_key: str
    positions: list[int]
    raws: list[Any]
    hashes: tuple[np.ndarray, np.ndarray]


class _WritePredictionsFn(beam.DoFn):
    """Buffers rows, flushes upserts of ``batch_rows``/``batch_bytes``; emits stats (main)
    and the rows the database rejected. Holds its connection (and slot) for one bundle."""

    def __init__(self, settings: SinkSettings, ctx: RunContext):
        self._s = settings
        self._ctx = ctx
        self._written = Metrics.counter("beamscore", "rows_written")

    def setup(self) -> None:
        self._limiter = rate_limiter(self._s.database, self._s.max_rows_per_second,
                                     self._s.machines)
        self._timer = ThrottleTimer()
        self._session = DatabaseSession(self._s.database, self._timer.add)
        self._last_log = time.monotonic()
        self._rows_total = 0

    def start_bundle(self) -> None:
        self._rows: list[tuple[Any, ...]] = []
        self._segments: list[_Segment] = []  # aligned with _rows, one per batch slice
        self._bytes = 0

    def process(self, batch: DocBatch) -> Iterator[Any]:
        cols = prediction_columns(batch, self._ctx)
        rows = PREDICTIONS.rows(cols)
        n = len(rows)
        if not n:
            return
        positions, raws = cols["position"], batch.frame[RAW].tolist()
        hi, lo = id_hashes(cols["doc_id"])
        # Bytes per row, estimated per batch: ids, top-k JSON, source file, fixed columns.
        per_row = (sum(map(len, cols["doc_id"])) + sum(map(len, cols["top_k"]))) // n \
            + len(batch.source_file) + 200
        start = 0
        while start < n:
            room = min(self._s.batch_rows - len(self._rows),
                       -(-(self._s.batch_bytes - self._bytes) // per_row))
            end = min(n, start + max(1, room))
            self._rows.extend(rows[start:end])
            self._segments.append(_Segment(
                batch.tranche, batch.source_file, batch.batch_key, positions[start:end],
                raws[start:end], (hi[start:end], lo[start:end])))
            self._bytes += (end - start) * per_row
            start = end
            if len(self._rows) >= self._s.batch_rows or self._bytes >= self._s.batch_bytes:
                for tag, value in self._flush():
                    yield value if tag == STATS else beam.pvalue.TaggedOutput(tag, value)

    def finish_bundle(self) -> Iterator[Any]:
        try:
            for tag, value in self._flush():
                yield windowed(value) if tag == STATS else \
                    beam.pvalue.TaggedOutput(tag, windowed(value))
        finally:
            self._session.close()

    def teardown(self) -> None:
        self._session.close()

    def _flush(self) -> Iterator[tuple[str, Any]]:
        """Write the buffer; (STATS, per-tranche counts), (IDS, ids written) and
        (DEAD_LETTERS, rows rejected)."""
        rows, segments = self._rows, self._segments
        self._rows, self._segments, self._bytes = [], [], 0
        if not rows:
            return
        throttled_before = self._timer.total_seconds
        rejected: dict[int, str] = {}
        size = self._s.write_size
        for start in range(0, len(rows), size):
            self._write_isolating(rows, start, min(len(rows), start + size), rejected)
        written: dict[str, int] = defaultdict(int)
        scored: dict[str, int] = defaultdict(int)
        offset = 0
        for seg in segments:
            k = len(seg.positions)
            scored[seg.tranche] += k
            written[seg.tranche] += k
            bad = sorted(j - offset for j in rejected if offset <= j < offset + k)
            for i in bad:
                written[seg.tranche] -= 1
                yield DEAD_LETTERS, dead_letter(
                    tranche=seg.tranche, source_file=seg.source_file,
                    position=seg.positions[i], stage="sink",
                    reason=f"database rejected the row: {rejected[offset + i]}"[:1000],
                    payload=seg.raws[i], payload_limit=self._s.payload_limit)
            keep = np.ones(k, dtype=bool)
            keep[bad] = False
            yield IDS, IdIndex(seg.tranche, seg.source_file, seg.batch_key,
                               seg.hashes[0][keep], seg.hashes[1][keep],
                               np.asarray(seg.positions, dtype=np.int64)[keep])
            offset += k
        self._written.inc(len(rows) - len(rejected))
        throttled_ms = int((self._timer.total_seconds - throttled_before) * 1000)
        for i, tranche in enumerate(scored):
            stats = {"scored": scored[tranche], "written": written[tranche]}
            if i == 0 and throttled_ms:
                stats["throttled_ms"] = throttled_ms
            yield STATS, (tranche, stats)
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

    Outputs: ``stats`` ((tranche, {"scored", "written"}), the main output),
    ``dead_letters`` (rows the database rejected permanently) and ``ids`` (``IdIndex``
    of the rows written).
    """

    def __init__(self, settings: SinkSettings, ctx: RunContext):
        super().__init__()
        self._fn = _WritePredictionsFn(settings, ctx)

    def expand(self, batches: beam.PCollection) -> beam.pvalue.DoOutputsTuple:
        return batches | "Upsert predictions" >> beam.ParDo(self._fn).with_outputs(
            DEAD_LETTERS, IDS, main=STATS)
