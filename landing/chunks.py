"""Chunks: the units of reading work a run hands to its workers.

Each file is cut by its format's splitter (``landing.formats``): uncompressed JSONL into
byte ranges, Parquet into row ranges, others read whole, so that workers share large
files. ``balanced_chunks`` cuts chunks of about equal estimated rows,
``CHUNKS_PER_WORKER`` per worker, largest first, because local runners hand chunks to
workers round-robin, once: equal chunks in descending order make them finish together.
Every chunk carries its file as listed (``Planned``): it is read as that file or not at
all (``landing.reading.open_input``).
"""

from __future__ import annotations

from collections.abc import Iterable

from landing.formats import resolve
from landing.reading import Chunk, Planned
from landing.splitters import Extent, Limits
from landing.tranches import SourceFile, TranchePlan

__all__ = ["CHUNKS_PER_WORKER", "MIN_CHUNK_BYTES", "Chunk", "balanced_chunks", "estimate_rows",
           "plan_chunks"]

CHUNKS_PER_WORKER = 8
MIN_CHUNK_BYTES = 256 << 10  # the smallest byte range a plan cuts (read.chunk_bytes too)


def estimate_rows(plans: Iterable[TranchePlan]) -> dict[str, Extent]:
    """Path -> estimated records (and row groups) of every file, by its format's estimate."""
    out = {}
    for plan in plans:
        for f in plan.files:
            fmt, gzipped = resolve(f.format)
            out[f.path] = fmt.estimate(f.path, f.size, gzipped)
    return out


def plan_chunks(plans: Iterable[TranchePlan], chunk_bytes: int, chunk_rows: int = 0,
                estimates: dict[str, Extent] | None = None) -> list[Chunk]:
    """Every file cut by its format: byte ranges of at most ``chunk_bytes`` and, when
    ``chunk_rows`` is set, row ranges of about ``chunk_rows`` (a Parquet row group of
    more rows is cut into fewer, larger pieces: ``landing.splitters.row_ranges``)."""
    plans = list(plans)
    est = estimate_rows(plans) if estimates is None else estimates
    limits = Limits(chunk_bytes, chunk_rows)
    return [c for plan in plans for f in plan.files
            for c in _file_chunks(plan.tranche, f, est[f.path], limits)]


def balanced_chunks(plans: list[TranchePlan], max_chunk_bytes: int, workers: int) -> list[Chunk]:
    """Chunks of about equal estimated rows, ``CHUNKS_PER_WORKER`` per worker, largest
    first; no byte range over ``max_chunk_bytes``."""
    est = estimate_rows(plans)
    target = max(1000, sum(e.rows for e in est.values()) // max(1, CHUNKS_PER_WORKER * workers))
    chunks = []
    for plan in plans:
        for f in plan.files:
            per_row = f.size / max(1, est[f.path].rows)
            chunk_bytes = min(max_chunk_bytes, max(MIN_CHUNK_BYTES, int(target * per_row)))
            chunks += _file_chunks(plan.tranche, f, est[f.path], Limits(chunk_bytes, target))
    return sorted(chunks, key=lambda c: (-c.est_rows, c.path, c.index))


def _file_chunks(tranche: str, f: SourceFile, extent: Extent, limits: Limits) -> list[Chunk]:
    fmt, gzipped = resolve(f.format)
    planned = Planned(f.size, f.fingerprint)
    return [Chunk(tranche, f.path, f.format, start, end, i, est_rows=n, planned=planned)
            for i, (start, end, n) in enumerate(fmt.splitter(f.size, gzipped, extent, limits))]
