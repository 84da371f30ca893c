"""Find tranches, cut them into chunks, and read chunks into DocBatches.

A tranche is one day folder ``<input_root>/dt=YYYY-MM-DD/`` holding ``*.jsonl``,
``*.jsonl.gz``, ``*.parquet`` and ``*.csv`` files in any mix, local or ``gs://``
(Beam's FileSystems). Discovery and chunking run at launch (``plan_tranches``), so a
run's input is fixed before any worker starts and ``beamscore plan`` shows exactly
what ``score`` would read.

Uncompressed JSONL is split into byte-range chunks (a line belongs to the chunk in
which it starts) so that workers share large files; other formats are read whole,
streamed in batches so memory stays flat in the file size. Every input line or row
leaves the reader either in a DocBatch or as a dead letter.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import apache_beam as beam
import pandas as pd
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from transforms.records import (
    DOC_ID,
    LABEL,
    METADATA,
    POSITION,
    RAW,
    TEXT,
    DocBatch,
    dead_letter,
)

FORMATS = {".jsonl.gz": "jsonl.gz", ".jsonl": "jsonl", ".parquet": "parquet", ".csv": "csv"}
STATS = "stats"
DEAD_LETTERS = "dead_letters"


def file_format(path: str) -> str | None:
    for suffix, fmt in FORMATS.items():
        if path.endswith(suffix):
            return fmt
    return None


@dataclass(frozen=True)
class SourceFile:
    path: str
    size: int
    format: str
    # Content identity for the tranche ledger: GCS generation/etag or mtime.
    fingerprint: str = ""


@dataclass
class TranchePlan:
    tranche: str
    folder: str
    files: list[SourceFile] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    missing_reason: str = ""

    @property
    def missing(self) -> bool:
        return bool(self.missing_reason)

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def fingerprint(self) -> str:
        """Hash of (path, size, content identity) of every file: changes when inputs do."""
        h = hashlib.sha256()
        for f in sorted(self.files, key=lambda f: f.path):
            h.update(f"{f.path}\0{f.size}\0{f.fingerprint}\n".encode())
        return h.hexdigest()


@dataclass(frozen=True)
class Chunk:
    """A unit of reading work: a file, a byte range of an uncompressed JSONL file, or a
    row range of a Parquet file (``start``/``end`` are bytes for JSONL, rows for Parquet)."""

    tranche: str
    path: str
    format: str
    start: int = 0
    end: int = -1  # -1 = to end of file
    index: int = 0
    est_rows: int = 0  # estimated records, for balancing chunks across workers

    @property
    def key(self) -> str:
        digest = hashlib.sha1(self.path.encode()).hexdigest()[:12]
        return f"{digest}-{self.index:04d}"


def date_range(start: dt.date, end: dt.date) -> list[dt.date]:
    if end < start:
        raise ValueError(f"--to {end} is before --from {start}")
    return [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]


def plan_tranches(input_root: str, dates: Iterable[dt.date]) -> list[TranchePlan]:
    """List the files of each tranche; a folder with no readable files is 'missing'."""
    plans = []
    root = input_root.rstrip("/")
    for day in dates:
        tranche = day.isoformat()
        folder = f"{root}/dt={tranche}"
        plan = TranchePlan(tranche=tranche, folder=folder)
        matched = FileSystems.match([folder + "/*"])[0].metadata_list
        for meta in sorted(matched, key=lambda m: m.path):
            fmt = file_format(meta.path)
            if fmt is None:
                plan.ignored.append(meta.path)
                continue
            ident = str(getattr(meta, "last_updated_in_seconds", "") or "")
            plan.files.append(SourceFile(meta.path, int(meta.size_in_bytes), fmt, ident))
        if not matched:
            plan.missing_reason = (f"folder {folder} is empty" if FileSystems.exists(folder)
                                   else f"no folder {folder}")
        elif not plan.files:
            plan.missing_reason = f"no *.jsonl, *.jsonl.gz, *.parquet or *.csv files in {folder}"
        plans.append(plan)
    return plans


def plan_chunks(plans: Iterable[TranchePlan], chunk_bytes: int,
                chunk_rows: int = 0) -> list[Chunk]:
    """Cut uncompressed JSONL larger than ``chunk_bytes`` into byte ranges and, when
    ``chunk_rows`` is set, Parquet files with more rows into row ranges."""
    chunks = []
    for plan in plans:
        for f in plan.files:
            if f.format == "jsonl" and f.size > chunk_bytes:
                for i, start in enumerate(range(0, f.size, chunk_bytes)):
                    end = min(start + chunk_bytes, f.size)
                    chunks.append(Chunk(plan.tranche, f.path, f.format, start, end, i))
            elif f.format == "parquet" and chunk_rows and _parquet_rows(f.path) > chunk_rows:
                rows = _parquet_rows(f.path)
                for i, start in enumerate(range(0, rows, chunk_rows)):
                    end = min(start + chunk_rows, rows)
                    chunks.append(Chunk(plan.tranche, f.path, f.format, start, end, i,
                                        est_rows=end - start))
            else:
                chunks.append(Chunk(plan.tranche, f.path, f.format))
    return chunks


CHUNKS_PER_WORKER = 8
_SAMPLE_BYTES = 256 << 10
_MIN_CHUNK_BYTES = 256 << 10
_GZIP_RATIO = 4.0  # assumed when estimating rows of .jsonl.gz from its compressed size


def balanced_chunks(plans: list[TranchePlan], max_chunk_bytes: int, workers: int) -> list[Chunk]:
    """Chunks of about equal estimated rows, ~8 per worker, largest first.

    Local runners hand chunks to workers round-robin, once, so equal chunks in
    descending order make the workers finish together. Rows are estimated from Parquet
    footers and from the bytes per line of each text file's first 256 KiB.
    """
    per_row = {f.path: _bytes_per_row(f) for p in plans for f in p.files}
    est = {f.path: _estimated_rows(f, per_row[f.path]) for p in plans for f in p.files}
    target = max(1000, sum(est.values()) // max(1, CHUNKS_PER_WORKER * workers))
    jsonl_rates = [per_row[f.path] for p in plans for f in p.files if f.format == "jsonl"]
    if jsonl_rates:
        per_jsonl_row = sum(jsonl_rates) / len(jsonl_rates)
        chunk_bytes = min(max_chunk_bytes, max(_MIN_CHUNK_BYTES, int(target * per_jsonl_row)))
    else:
        chunk_bytes = max_chunk_bytes
    chunks = []
    for c in plan_chunks(plans, chunk_bytes, chunk_rows=target):
        if c.est_rows:
            chunks.append(c)
            continue
        if c.end >= 0:  # a JSONL byte range
            rows = int((c.end - c.start) / per_row[c.path])
        else:
            rows = est[c.path]
        chunks.append(replace(c, est_rows=rows))
    return sorted(chunks, key=lambda c: (-c.est_rows, c.path, c.index))


def _parquet_rows(path: str) -> int:
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as fh:
        return int(pq.ParquetFile(fh).metadata.num_rows)


def _bytes_per_row(f: SourceFile) -> float:
    """Average bytes per line in the first 256 KiB (uncompressed bytes for .gz)."""
    if f.format == "parquet":
        return max(1.0, f.size / max(1, _parquet_rows(f.path)))
    compression = CompressionTypes.GZIP if f.format == "jsonl.gz" else \
        CompressionTypes.UNCOMPRESSED
    try:
        with FileSystems.open(f.path, compression_type=compression) as fh:
            sample = fh.read(_SAMPLE_BYTES)
    except Exception:  # noqa: BLE001 - unreadable files are reported by the reader
        return 1000.0
    return max(1.0, len(sample) / max(1, sample.count(b"\n")))


def _estimated_rows(f: SourceFile, per_row: float) -> int:
    if f.format == "parquet":
        return int(f.size / per_row)
    size = f.size * (_GZIP_RATIO if f.format == "jsonl.gz" else 1.0)
    return max(1, int(size / per_row))


# --------------------------------------------------------------------------- reading
class _Batcher:
    """Accumulates parsed records of one chunk and cuts DocBatches of ``batch_size``."""

    def __init__(self, chunk: Chunk, fields: Any, batch_size: int):
        self.chunk = chunk
        self.fields = fields
        self.batch_size = batch_size
        self.records: list[Any] = []
        self.positions: list[int] = []
        self.n_batches = 0

    def add(self, record: Any, position: int) -> DocBatch | None:
        self.records.append(record)
        self.positions.append(position)
        return self.flush() if len(self.records) >= self.batch_size else None

    def flush(self) -> DocBatch | None:
        if not self.records:
            return None
        frame = self._frame(self.records, self.positions)
        batch = DocBatch(
            tranche=self.chunk.tranche,
            source_file=self.chunk.path,
            batch_key=f"{self.chunk.key}-{self.n_batches:05d}",
            frame=frame,
        )
        self.n_batches += 1
        self.records, self.positions = [], []
        return batch

    def _frame(self, records: list[Any], positions: list[int]) -> pd.DataFrame:
        f = self.fields
        get = [r.get for r in records]
        meta = (
            [json.dumps({k: g(k) for k in f.metadata}, default=str) for g in get]
            if f.metadata else [None] * len(records)
        )
        return pd.DataFrame(
            {
                DOC_ID: pd.Series([g(f.id) for g in get], dtype=object),
                TEXT: pd.Series([g(f.text) for g in get], dtype=object),
                LABEL: pd.Series([g(f.label) for g in get], dtype=object),
                POSITION: positions,
                METADATA: pd.Series(meta, dtype=object),
                RAW: pd.Series(records, dtype=object),
            }
        )


class _Rejected(dict):  # type: ignore[type-arg]
    """A dead letter yielded by a format reader in place of a record."""


class _ReadChunkFn(beam.DoFn):
    """Chunk -> DocBatches (main), dead letters and a read count per chunk."""

    def __init__(self, fields: Any, batch_size: int, payload_limit: int):
        self._fields = fields
        self._batch_size = batch_size
        self._payload_limit = payload_limit

    def process(self, chunk: Chunk) -> Iterator[Any]:
        batcher = _Batcher(chunk, self._fields, self._batch_size)
        counts = {"read": 0}
        reader = {
            "jsonl": self._jsonl, "jsonl.gz": self._jsonl, "csv": self._csv,
            "parquet": self._parquet,
        }[chunk.format]
        position = 0
        try:
            for item, position in reader(chunk):
                counts["read"] += 1
                if isinstance(item, _Rejected):
                    yield beam.pvalue.TaggedOutput(DEAD_LETTERS, dict(item))
                    continue
                out = batcher.add(item, position)
                if out is not None:
                    yield out
        except Exception as exc:  # noqa: BLE001 - an unreadable rest of file is one dead letter
            counts["read"] += 1
            yield beam.pvalue.TaggedOutput(DEAD_LETTERS, dict(self._dead(
                chunk, position + 1, f"unreadable {chunk.format} file after position "
                f"{position}: {type(exc).__name__}: {exc}", None)))
        last = batcher.flush()
        if last is not None:
            yield last
        yield beam.pvalue.TaggedOutput(STATS, (chunk.tranche, counts))

    def _dead(self, chunk: Chunk, position: int, reason: str, payload: Any) -> _Rejected:
        return _Rejected(dead_letter(
            tranche=chunk.tranche, source_file=chunk.path, position=position, stage="read",
            reason=reason, payload=payload, payload_limit=self._payload_limit,
        ))

    # Each reader yields (record dict | dead-letter dict, 1-based position).
    def _jsonl(self, chunk: Chunk) -> Iterator[tuple[dict[str, Any], int]]:
        compression = CompressionTypes.GZIP if chunk.format == "jsonl.gz" else \
            CompressionTypes.UNCOMPRESSED
        with FileSystems.open(chunk.path, compression_type=compression) as raw:
            fh: Any = raw if compression == CompressionTypes.GZIP else \
                io.BufferedReader(raw, 1 << 20)  # type: ignore[type-var]
            lineno, pos = 0, chunk.start
            if chunk.start > 0:
                lineno = _count_newlines(chunk.path, chunk.start - 1)
                fh.seek(chunk.start - 1)
                pos = chunk.start - 1 + len(fh.readline())  # finish the line owned by the
                lineno += 1                                 # previous chunk
            while chunk.end < 0 or pos < chunk.end:
                line = fh.readline()
                if not line:
                    break
                pos += len(line)
                lineno += 1
                if not line.strip():
                    continue  # blank lines are not records
                yield self._parse_json_line(chunk, line, lineno), lineno

    def _parse_json_line(self, chunk: Chunk, line: bytes, lineno: int) -> dict[str, Any]:
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            return self._dead(chunk, lineno, f"undecodable bytes (not UTF-8): {exc}", line)
        try:
            obj = json.loads(text)
        except ValueError as exc:
            return self._dead(chunk, lineno, f"malformed JSON: {exc}", text)
        if not isinstance(obj, dict):
            return self._dead(chunk, lineno, "JSON line is not an object", text)
        return obj

    def _csv(self, chunk: Chunk) -> Iterator[tuple[dict[str, Any], int]]:
        with FileSystems.open(chunk.path, compression_type=CompressionTypes.UNCOMPRESSED) as raw:
            # utf-8-sig: Excel's "CSV UTF-8" starts with a byte-order mark.
            text = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="surrogateescape",
                                    newline="")
            reader = csv.reader(text, strict=True)
            try:
                header = next(reader)
            except StopIteration:
                return
            width = len(header)
            row_no = 0
            while True:
                try:
                    row = next(reader)
                except StopIteration:
                    break
                except csv.Error as exc:
                    row_no += 1
                    yield self._dead(chunk, row_no, f"malformed CSV row (line "
                                     f"{reader.line_num}): {exc}", None), row_no
                    continue
                row_no += 1
                if not row:
                    row_no -= 1  # an empty line is not a row
                    continue
                try:
                    "".join(row).encode("utf-8")
                except UnicodeEncodeError:
                    payload = ",".join(row).encode("utf-8", "surrogateescape")
                    yield self._dead(chunk, row_no, "undecodable bytes (not UTF-8)",
                                     payload), row_no
                    continue
                if len(row) != width:
                    yield self._dead(chunk, row_no, f"malformed CSV row: expected {width} "
                                     f"fields, got {len(row)}", row), row_no
                    continue
                yield dict(zip(header, row)), row_no

    def _parquet(self, chunk: Chunk) -> Iterator[tuple[dict[str, Any], int]]:
        with FileSystems.open(chunk.path, compression_type=CompressionTypes.UNCOMPRESSED) as fh:
            pf = pq.ParquetFile(fh)
            first, last = chunk.start, (chunk.end if chunk.end >= 0 else pf.metadata.num_rows)
            row_no = 0  # rows before this record batch
            for rb in pf.iter_batches(batch_size=self._batch_size):
                lo, hi = max(first - row_no, 0), min(last - row_no, rb.num_rows)
                if lo < hi:
                    for i, record in enumerate(rb.slice(lo, hi - lo).to_pylist()):
                        yield record, row_no + lo + i + 1
                row_no += rb.num_rows
                if row_no >= last:
                    break


def _count_newlines(path: str, upto: int) -> int:
    n, left = 0, upto
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as fh:
        while left > 0:
            block = fh.read(min(left, 8 << 20))
            if not block:
                break
            n += block.count(b"\n")
            left -= len(block)
    return n


class ReadTranches(beam.PTransform):
    """Chunks -> DocBatches, with ``dead_letters`` and ``stats`` tagged outputs."""

    def __init__(self, chunks: list[Chunk], fields: Any, batch_size: int, payload_limit: int):
        super().__init__()
        self._chunks = chunks
        self._fields = fields
        self._batch_size = batch_size
        self._payload_limit = payload_limit

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.pvalue.DoOutputsTuple:
        return (
            pbegin
            | "List chunks" >> beam.Create(self._chunks, reshuffle=False)
            | "Distribute chunks" >> beam.Reshuffle()
            | "Parse records" >> beam.ParDo(
                _ReadChunkFn(self._fields, self._batch_size, self._payload_limit)
            ).with_output_types(DocBatch).with_outputs(DEAD_LETTERS, STATS, main="batches")
        )
