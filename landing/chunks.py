"""Chunks: the units of reading work a run hands to its workers.

Uncompressed JSONL is split into byte-range chunks (a line belongs to the chunk in
which it starts) and Parquet into row ranges, so that workers share large files; other
formats are read whole. ``balanced_chunks`` cuts chunks of about equal estimated rows,
``CHUNKS_PER_WORKER`` per worker, largest first, because local runners hand chunks to
workers round-robin, once: equal chunks in descending order make them finish together.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, replace

import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from landing.tranches import SourceFile, TranchePlan

CHUNKS_PER_WORKER = 8
_SAMPLE_BYTES = 256 << 10
_MIN_CHUNK_BYTES = 256 << 10
_GZIP_RATIO = 4.0  # assumed when estimating rows of .jsonl.gz from its compressed size


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
            elif f.format == "parquet" and chunk_rows and parquet_rows(f.path) > chunk_rows:
                rows = parquet_rows(f.path) or 0
                for i, start in enumerate(range(0, rows, chunk_rows)):
                    end = min(start + chunk_rows, rows)
                    chunks.append(Chunk(plan.tranche, f.path, f.format, start, end, i,
                                        est_rows=end - start))
            else:
                chunks.append(Chunk(plan.tranche, f.path, f.format))
    return chunks


def balanced_chunks(plans: list[TranchePlan], max_chunk_bytes: int, workers: int) -> list[Chunk]:
    """Chunks of about equal estimated rows, ``CHUNKS_PER_WORKER`` per worker, largest
    first. Rows are estimated from Parquet footers and from the bytes per line of each
    text file's first 256 KiB."""
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


def parquet_rows(path: str) -> int:
    """Rows in a Parquet file's footer; 0 if it cannot be read (the reader reports it)."""
    try:
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as fh:
            return int(pq.ParquetFile(fh).metadata.num_rows)
    except Exception:  # noqa: BLE001 - an unreadable file is one dead letter when read
        return 0


def _bytes_per_row(f: SourceFile) -> float:
    """Average bytes per line in the first 256 KiB (uncompressed bytes for .gz)."""
    if f.format == "parquet":
        return max(1.0, f.size / max(1, parquet_rows(f.path)))
    compression = CompressionTypes.GZIP if f.format.endswith(".gz") else \
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
    size = f.size * (_GZIP_RATIO if f.format.endswith(".gz") else 1.0)
    return max(1, int(size / per_row))
