"""How a format cuts a file into chunks: whole, byte ranges or row ranges.

A splitter takes a file's size, whether it is gzipped, its ``Extent`` (estimated rows
and, for a format stored in row groups, the rows of each group) and the ``Limits`` of
one chunk, and returns ``Span``s ``(start, end, estimated rows)``; ``end`` -1 is the end
of the file. A byte range owns the lines that start in it (the format's reader finishes
a line begun before ``end`` and skips one begun before ``start``).

A row range of a file stored in row groups (Parquet) is read by decoding its groups
from their first row, and the reader fetches a group's column chunks whole: a range
that begins inside a group decodes the rows of the group before it too, and on gs://
downloads the whole group. ``row_ranges`` therefore puts small groups together and cuts
a group larger than a range into fewer pieces than its rows would give (``pieces``):
at most ``MAX_PIECES_PER_GROUP``, and for a group of more than 64 ranges' rows one
piece per ``MAX_PIECES_PER_GROUP`` ranges. Cut into k pieces, a group is decoded
(k + 1) / 2 times over and downloaded k times. The plan cuts about 8 ranges per process
(``landing.chunks``), so a group that is most of a run still gives every process a
piece: a one-group file of 1,000,000 rows planned for 40 cores (320 ranges of 3,125
rows) is 40 pieces, decoded 20.5 times over and downloaded 40 times instead of about
160 and 320 times; the 125,000-row one-group files of the bench's 1,000,000 documents
at 16 or 40 processes are 8 pieces each.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

Span = tuple[int, int, int]
MAX_PIECES_PER_GROUP = 8  # pieces of one row group, or one piece per this many ranges


@dataclass(frozen=True)
class Extent:
    """What planning knows of a file's records: their estimated number and, for a format
    stored in row groups, the rows of each group in order (empty where it has none, or
    the file could not be read)."""

    rows: int
    groups: tuple[int, ...] = ()


@dataclass(frozen=True)
class Limits:
    """The most bytes and rows one chunk may hold; ``chunk_rows`` 0 cuts no row ranges."""

    chunk_bytes: int
    chunk_rows: int = 0


Splitter = Callable[[int, bool, Extent, Limits], list[Span]]


def whole(size: int, gzipped: bool, extent: Extent, limits: Limits) -> list[Span]:
    """One chunk: the whole file (formats that cannot be entered in the middle)."""
    return [(0, -1, extent.rows)]


def byte_ranges(size: int, gzipped: bool, extent: Extent, limits: Limits) -> list[Span]:
    """Contiguous byte ranges of ``limits.chunk_bytes`` for an uncompressed file larger
    than that; a gzipped file cannot be entered in the middle and is read whole."""
    if gzipped or size <= limits.chunk_bytes:
        return whole(size, gzipped, extent, limits)
    step, rows = limits.chunk_bytes, extent.rows
    return [(start, min(start + step, size), rows * (min(start + step, size) - start) // size)
            for start in range(0, size, step)]


def pieces(ranges: int) -> int:
    """The pieces a row group of ``ranges`` ranges' rows is cut into:
    ``MAX_PIECES_PER_GROUP`` at most, or one per ``MAX_PIECES_PER_GROUP`` ranges."""
    return min(ranges, max(MAX_PIECES_PER_GROUP, -(-ranges // MAX_PIECES_PER_GROUP)))


def row_ranges(size: int, gzipped: bool, extent: Extent, limits: Limits) -> list[Span]:
    """Row ranges of about ``limits.chunk_rows`` when the file has more rows (exact
    counts, as in a Parquet footer); else the whole file. With the file's row groups
    known: consecutive groups that fit in one range together are one range, and a
    larger group of r ranges' rows is cut into ``pieces(r)`` equal pieces; without
    them, ranges of ``limits.chunk_rows``."""
    step, rows = limits.chunk_rows, extent.rows
    if not step or rows <= step:
        return whole(size, gzipped, extent, limits)
    if sum(extent.groups) != rows:  # no groups known (or not these rows'): even ranges
        return [(start, min(start + step, rows), min(start + step, rows) - start)
                for start in range(0, rows, step)]
    cuts, at, begun = [0], 0, 0  # begun: the first row of the range being gathered
    for n in extent.groups:
        if n > step:  # a large group: ranges of its own, in equal pieces
            if at > begun:
                cuts.append(at)
            k = pieces(-(-n // step))
            cuts += [at + n * i // k for i in range(1, k + 1)]
            begun = at + n
        elif at + n - begun > step:  # this small group starts the next range
            cuts.append(at)
            begun = at
        at += n
    if cuts[-1] != rows:
        cuts.append(rows)
    return [(a, b, b - a) for a, b in zip(cuts, cuts[1:], strict=False) if b > a]
