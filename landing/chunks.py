"""Chunks: the units of reading work a run hands to its workers.

Each file is cut by its format's splitter (``landing.formats``): uncompressed JSONL into
byte ranges, Parquet into row ranges, others read whole, so that workers share large
files. ``balanced_chunks`` cuts chunks of about equal estimated rows,
``CHUNKS_PER_WORKER`` per worker, largest first, because local runners hand chunks to
workers round-robin, once: equal chunks in descending order make them finish together.
Every chunk carries its file as listed (``Planned``): it is read as that file or not at
all (``landing.reading.open_input``).

A worker takes a ``ReadTask``: one chunk, or the small files of one tranche read one
after the other. ``balanced_tasks`` packs the files read whole (``whole_file``) with
fewer estimated rows than the run's chunk target, in path order, into tasks of about
that target, so that a tranche of many small files is read in tasks of some thousand
rows, cut into full batches, instead of one task, one batch and one model call per
file; a file cut into several chunks keeps a task per chunk. A file costs its opening
whatever it holds (on gs:// a request or more), so a task also holds at most the run's
small files over ``CHUNKS_PER_WORKER`` per worker, or ``MIN_FILES_PER_TASK`` where that
is more: many files of few or no records are still spread over every worker.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from landing.formats import resolve
from landing.reading import Chunk, Planned
from landing.splitters import Extent, Limits
from landing.tranches import SourceFile, TranchePlan

__all__ = ["CHUNKS_PER_WORKER", "MIN_CHUNK_BYTES", "MIN_FILES_PER_TASK", "Chunk", "ReadTask",
           "balanced_chunks", "balanced_tasks", "estimate_rows", "plan_chunks", "whole_file"]

CHUNKS_PER_WORKER = 8
MIN_CHUNK_BYTES = 256 << 10  # the smallest byte range a plan cuts (read.chunk_bytes too)
MIN_FILES_PER_TASK = 100  # small files a read task may hold however many workers share them


ESTIMATE_THREADS = 16  # objects in Cloud Storage sampled at once (a request each)
SAMPLED_SMALL_FILES = 16  # small line files of a tranche and format that are sampled
_SMALL = 512 << 10  # a line file this small is sampled whole (landing.sampling)


def estimate_rows(plans: Iterable[TranchePlan]) -> dict[str, Extent]:
    """Path -> estimated records (and row groups) of every file, by its format's
    estimate, each file version estimated once per process. Of a tranche's many small
    JSONL or CSV files (of one format and compression), ``SAMPLED_SMALL_FILES`` spread
    over them are sampled and the others estimated by their bytes per record (a request
    or two a file in Cloud Storage: 1,500 small objects took 16 s to sample one by one
    on the emulator, twice a run); files in Cloud Storage are sampled
    ``ESTIMATE_THREADS`` at a time."""
    plans = list(plans)
    sampled: list[SourceFile] = []
    by_ratio: list[tuple[SourceFile, list[SourceFile]]] = []
    for plan in plans:
        small: dict[str, list[SourceFile]] = {}
        for f in plan.files:
            if f.size <= _SMALL and resolve(f.format)[0].name in ("jsonl", "csv"):
                small.setdefault(f.format, []).append(f)
            else:
                sampled.append(f)
        for group in small.values():
            if len(group) <= SAMPLED_SMALL_FILES:
                sampled += group
                continue
            group = sorted(group, key=lambda f: f.path)
            step = len(group) / SAMPLED_SMALL_FILES
            chosen = [group[int(k * step)] for k in range(SAMPLED_SMALL_FILES)]
            sampled += chosen
            chosen_paths = {f.path for f in chosen}
            by_ratio += [(f, chosen) for f in group if f.path not in chosen_paths]
    if len(sampled) > 1 and any("://" in f.path for f in sampled):
        with ThreadPoolExecutor(max_workers=min(ESTIMATE_THREADS, len(sampled))) as pool:
            out = dict(zip([f.path for f in sampled], pool.map(_estimate, sampled)))
    else:
        out = {f.path: _estimate(f) for f in sampled}
    for f, chosen in by_ratio:
        rows = sum(out[c.path].rows for c in chosen)
        size = sum(c.size for c in chosen)
        out[f.path] = Extent(max(1, round(f.size * rows / max(1, size))))
    return out


def _estimate(f: SourceFile) -> Extent:
    return _estimate_version(f.path, f.size, f.fingerprint, f.format)


@functools.lru_cache(maxsize=65536)
def _estimate_version(path: str, size: int, fingerprint: str, name: str) -> Extent:
    """One file version's estimate (its fingerprint names the version), made once."""
    fmt, gzipped = resolve(name)
    return fmt.estimate(path, size, gzipped)


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


@dataclass(frozen=True)
class ReadTask:
    """The reading work of one worker's element: chunks of one tranche, read in order
    into the same batches. ``key`` is its first chunk's, which is in no other task."""

    chunks: tuple[Chunk, ...]

    def __post_init__(self) -> None:
        if not self.chunks or len({c.tranche for c in self.chunks}) > 1:
            raise ValueError("a read task holds chunks of one tranche")

    @property
    def tranche(self) -> str:
        return self.chunks[0].tranche

    @property
    def key(self) -> str:
        return self.chunks[0].key

    @property
    def est_rows(self) -> int:
        return sum(c.est_rows for c in self.chunks)


def whole_file(chunk: Chunk) -> bool:
    """Whether ``chunk`` is its file whole (not one of several ranges of it)."""
    return chunk.start <= 0 and chunk.end < 0 and chunk.index == 0


def balanced_chunks(plans: list[TranchePlan], max_chunk_bytes: int, workers: int) -> list[Chunk]:
    """Chunks of about equal estimated rows, ``CHUNKS_PER_WORKER`` per worker, largest
    first; no byte range over ``max_chunk_bytes``."""
    return _balanced(plans, max_chunk_bytes, workers)[0]


def balanced_tasks(plans: list[TranchePlan], max_chunk_bytes: int,
                   workers: int) -> list[ReadTask]:
    """``balanced_chunks`` as read tasks, largest first: each tranche's small whole
    files packed in path order into tasks of about the chunk target in estimated rows
    and of at most the run's small files over ``CHUNKS_PER_WORKER`` per worker (or
    ``MIN_FILES_PER_TASK``); every other chunk a task of its own."""
    chunks, target = _balanced(plans, max_chunk_bytes, workers)
    tasks: list[ReadTask] = []
    small: dict[str, list[Chunk]] = {}  # tranche -> its small whole files
    for c in chunks:
        if whole_file(c) and c.est_rows < target:
            small.setdefault(c.tranche, []).append(c)
        else:
            tasks.append(ReadTask((c,)))
    n_small = sum(map(len, small.values()))
    max_files = max(MIN_FILES_PER_TASK, -(-n_small // max(1, CHUNKS_PER_WORKER * workers)))
    for files in small.values():
        packed: list[Chunk] = []
        rows = 0
        for c in sorted(files, key=lambda c: c.path):
            packed.append(c)
            rows += c.est_rows
            if rows >= target or len(packed) >= max_files:
                tasks.append(ReadTask(tuple(packed)))
                packed, rows = [], 0
        if packed:
            tasks.append(ReadTask(tuple(packed)))
    return sorted(tasks, key=lambda t: (-t.est_rows, t.chunks[0].path, t.chunks[0].index))


def _balanced(plans: list[TranchePlan], max_chunk_bytes: int,
              workers: int) -> tuple[list[Chunk], int]:
    """The chunks, largest first, and the target rows of one chunk they were cut to."""
    est = estimate_rows(plans)
    target = max(1000, sum(e.rows for e in est.values()) // max(1, CHUNKS_PER_WORKER * workers))
    chunks = []
    for plan in plans:
        for f in plan.files:
            per_row = f.size / max(1, est[f.path].rows)
            chunk_bytes = min(max_chunk_bytes, max(MIN_CHUNK_BYTES, int(target * per_row)))
            chunks += _file_chunks(plan.tranche, f, est[f.path], Limits(chunk_bytes, target))
    return sorted(chunks, key=lambda c: (-c.est_rows, c.path, c.index)), target


def _file_chunks(tranche: str, f: SourceFile, extent: Extent, limits: Limits) -> list[Chunk]:
    fmt, gzipped = resolve(f.format)
    planned = Planned(f.size, f.fingerprint)
    return [Chunk(tranche, f.path, f.format, start, end, i, est_rows=n, planned=planned)
            for i, (start, end, n) in enumerate(fmt.splitter(f.size, gzipped, extent, limits))]
