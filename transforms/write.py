"""Write to the database: scored DocBatches in, ``predictions`` rows upserted.

The predictions use of the sink (``transforms.sink``): rows are buffered up to
``batch_rows``/``batch_bytes`` (an input batch is cut at the limit), written through
the rate limiter and the connection cap, transient errors retried, and only
idempotent upserts issued. Rows the database rejects permanently are isolated by
bisection and dead-lettered (stage ``sink``) with the database's message. Each flush
emits per-tranche counts on the main output (to which the sink adds the time it waited
for the rate limit and for the database) and the ids it wrote (``IDS``) for
``transforms.dedupe``.

A batch's prediction file (``transforms.files``) is written once every row of the batch
is committed, without the rows the database rejected: each write checks the run's
fence, so a run that lost its tranche (frozen past its lease, then thawed) fails its
next write and writes no file after it, as it writes no row.

With a rate limit R, no single write is larger than ``write_size`` (a quarter of this
machine's share of R, at most ``batch_rows``), so that no 1-second window of commits
exceeds R whatever R and ``batch_rows`` are.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any

import apache_beam as beam
import numpy as np
import pandas as pd
from apache_beam.metrics import Metrics

from store.database import Database
from store.schema import PREDICTIONS
from store.session import DatabaseSettings
from transforms.dedupe import IdIndex, id_hashes
from transforms.files import prediction_file, prediction_table, write_parquet
from transforms.records import (
    DEAD_LETTERS,
    RAW,
    STATS,
    TEXT,
    DocBatch,
    RunContext,
    dead_letter,
    prediction_columns,
)
from transforms.sink import SinkTable, WriteFn, Writer, rejected_reason

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


@dataclass
class _Segment:
    """A slice of one input batch in the write buffer: its rows, and for stats, ids and
    dead letters where they came from (``files[file_of[i]]``: row i's source file)."""

    tranche: str
    batch_key: str
    rows: list[tuple[Any, ...]]
    files: tuple[str, ...]
    file_of: np.ndarray
    positions: list[int]
    raws: list[Any]
    hashes: tuple[np.ndarray, np.ndarray]


@dataclass
class _File:
    """A batch's prediction file, written once its rows still to commit are none."""

    batch: DocBatch
    cols: dict[str, Any]  # the batch's ``prediction_columns``
    pending: int
    rejected: set[tuple[str, int]]  # (source file, position) of rows the database refused


class _Predictions(SinkTable[DocBatch, _Segment]):
    """Flushes upserts of ``batch_rows``/``batch_bytes``; emits stats (main), the ids
    written and the rows the database rejected; writes each batch's prediction file
    once all its rows are committed."""

    logs_progress = True
    defers = True

    def __init__(self, settings: SinkSettings, ctx: RunContext, output_dir: str):
        self.flush_rows, self.flush_bytes = settings.batch_rows, settings.batch_bytes
        self._ctx = ctx
        self._fence = ctx.fence()
        self._output_dir = output_dir
        self._payload_limit = settings.payload_limit
        self._written = Metrics.counter("beamscore", "rows_written")
        self._files: dict[str, _File] = {}  # batch key -> its file, rows not all committed

    def prepare(self, batch: DocBatch) -> tuple[_Segment, int, int] | None:
        cols = prediction_columns(batch, self._ctx)
        rows = PREDICTIONS.rows(cols)
        n = len(rows)
        if not n:
            return None
        hi, lo = id_hashes(cols["doc_id"])
        file_of, files = pd.factorize(np.asarray(cols["source_file"], dtype=object))
        # Bytes per row held until the write, estimated per batch: ids, top-k JSON, the
        # record kept for a dead letter (its text), source file, fixed columns.
        texts = batch.frame.get(TEXT)
        text_chars = int(texts.str.len().sum()) if texts is not None else 0
        per_row = (sum(map(len, cols["doc_id"])) + sum(map(len, cols["top_k"]))
                   + text_chars) // n + max(map(len, files)) + 200
        self._files[batch.batch_key] = _File(batch, cols, n, set())
        return _Segment(batch.tranche, batch.batch_key, rows, tuple(files), file_of,
                        cols["position"], batch.frame[RAW].tolist(), (hi, lo)), n, per_row

    def cut(self, seg: _Segment, start: int, end: int) -> _Segment:
        return _Segment(seg.tranche, seg.batch_key, seg.rows[start:end], seg.files,
                        seg.file_of[start:end], seg.positions[start:end], seg.raws[start:end],
                        (seg.hashes[0][start:end], seg.hashes[1][start:end]))

    def upsert(self, db: Database, rows: Sequence[tuple[Any, ...]]) -> int:
        return db.upsert_predictions(rows, self._fence)

    def reset(self) -> None:
        self._files = {}

    def _committed(self, seg: _Segment, refused: list[tuple[str, int]]) -> None:
        """The rows of ``seg`` are committed (``refused`` rejected): the batch's file, if
        no row of it is left to commit."""
        file = self._files[seg.batch_key]
        file.pending -= len(seg.positions)
        file.rejected.update(refused)
        if file.pending:
            return
        del self._files[seg.batch_key]
        keep = None if not file.rejected else [
            (f, p) not in file.rejected
            for f, p in zip(file.cols["source_file"], file.cols["position"])]
        write_parquet(prediction_file(self._output_dir, self._ctx, file.batch.tranche,
                                      seg.batch_key), prediction_table(file.batch, file.cols, keep))

    def flush(self, segments: list[_Segment], writer: Writer
              ) -> Iterator[tuple[str | None, Any]]:
        """(None, per-tranche counts), (IDS, ids written), (DEAD_LETTERS, rows rejected)."""
        rows = list(chain.from_iterable(seg.rows for seg in segments))
        rejected = writer.write(rows)
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
                    tranche=seg.tranche, source_file=seg.files[seg.file_of[i]],
                    position=seg.positions[i], stage="sink",
                    reason=rejected_reason(rejected[offset + i]),
                    payload=seg.raws[i], payload_limit=self._payload_limit)
            keep = np.ones(k, dtype=bool)
            keep[bad] = False
            positions = np.asarray(seg.positions, dtype=np.int64)
            yield IDS, IdIndex(seg.tranche, seg.batch_key, seg.files, seg.file_of[keep],
                               seg.hashes[0][keep], seg.hashes[1][keep], positions[keep],
                               seg.file_of[~keep], positions[~keep])
            self._committed(seg, [(seg.files[seg.file_of[i]], seg.positions[i]) for i in bad])
            offset += k
        self._written.inc(len(rows) - len(rejected))
        for tranche in scored:
            yield None, (tranche, {"scored": scored[tranche], "written": written[tranche]})


class WriteToDatabase(beam.PTransform):
    """Scored DocBatches -> upserted ``predictions`` rows, and one prediction file per
    batch under ``output_dir`` once its rows are committed.

    Outputs: ``stats`` ((tranche, {"scored", "written"}), the main output),
    ``dead_letters`` (rows the database rejected permanently) and ``ids`` (``IdIndex``
    of the rows written).
    """

    def __init__(self, settings: SinkSettings, ctx: RunContext, output_dir: str):
        super().__init__()
        self._fn = WriteFn(settings, _Predictions(settings, ctx, output_dir))

    def expand(self, batches: beam.PCollection) -> beam.pvalue.DoOutputsTuple:
        return batches | "Upsert predictions" >> beam.ParDo(self._fn).with_outputs(
            DEAD_LETTERS, IDS, main=STATS)
