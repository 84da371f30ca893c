"""How a format cuts a file into chunks: whole, byte ranges or row ranges.

A splitter takes a file's size, whether it is gzipped, its estimated rows and the
``Limits`` of one chunk, and returns ``Span``s ``(start, end, estimated rows)``; ``end``
-1 is the end of the file. A byte range owns the lines that start in it (the format's
reader finishes a line begun before ``end`` and skips one begun before ``start``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

Span = tuple[int, int, int]


@dataclass(frozen=True)
class Limits:
    """The most bytes and rows one chunk may hold; ``chunk_rows`` 0 cuts no row ranges."""

    chunk_bytes: int
    chunk_rows: int = 0


Splitter = Callable[[int, bool, int, Limits], list[Span]]


def whole(size: int, gzipped: bool, rows: int, limits: Limits) -> list[Span]:
    """One chunk: the whole file (formats that cannot be entered in the middle)."""
    return [(0, -1, rows)]


def byte_ranges(size: int, gzipped: bool, rows: int, limits: Limits) -> list[Span]:
    """Contiguous byte ranges of ``limits.chunk_bytes`` for an uncompressed file larger
    than that; a gzipped file cannot be entered in the middle and is read whole."""
    if gzipped or size <= limits.chunk_bytes:
        return whole(size, gzipped, rows, limits)
    step = limits.chunk_bytes
    return [(start, min(start + step, size), rows * (min(start + step, size) - start) // size)
            for start in range(0, size, step)]


def row_ranges(size: int, gzipped: bool, rows: int, limits: Limits) -> list[Span]:
    """Row ranges of ``limits.chunk_rows`` when the file has more rows (exact counts,
    as in a Parquet footer); else the whole file."""
    step = limits.chunk_rows
    if not step or rows <= step:
        return whole(size, gzipped, rows, limits)
    return [(start, min(start + step, rows), min(start + step, rows) - start)
            for start in range(0, rows, step)]
