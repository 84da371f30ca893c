"""Parquet (``.parquet``): each row a record; positions are 1-based row numbers.

The footer gives the exact rows of each row group, so large files are cut into row
ranges along them (``landing.splitters.row_ranges``: small groups together, a large
group in a few equal pieces). A range decodes only the row groups
that hold its rows, each from its first row up to the range's end; pyarrow fetches the
column chunks of those groups whole (on gs://, a range inside a group downloads the
group). A file whose schema lacks a column the run requires is one rejection, from its
first chunk.
"""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow.parquet as pq

from landing.reading import Chunk, Item, ReadOptions, open_input
from landing.splitters import Extent


def read(chunk: Chunk, _gzipped: bool, opts: ReadOptions) -> Iterator[Item]:
    """The rows of ``chunk``; a file whose schema lacks a required column raises in its
    first chunk (one rejection for the file) and yields nothing in the others."""
    with open_input(chunk.path) as fh:
        pf = pq.ParquetFile(fh)
        names = pf.schema_arrow.names
        missing = [c for c in opts.required if c not in names]
        if missing and chunk.start <= 0:
            raise ValueError(f"the Parquet schema has no column "
                             f"{', '.join(map(repr, missing))} (columns: "
                             f"{', '.join(names) or 'none'})")
        if missing:
            return
        first, last = chunk.start, (chunk.end if chunk.end >= 0 else pf.metadata.num_rows)
        groups, row_no = _row_groups(pf.metadata, first, last)  # row_no: rows before a batch
        if not groups:
            return
        for rb in pf.iter_batches(batch_size=opts.batch_size, row_groups=groups):
            lo, hi = max(first - row_no, 0), min(last - row_no, rb.num_rows)
            if lo < hi:
                for i, record in enumerate(rb.slice(lo, hi - lo).to_pylist()):
                    yield record, row_no + lo + i + 1
            row_no += rb.num_rows
            if row_no >= last:
                break


def _row_groups(metadata: pq.FileMetaData, first: int, last: int) -> tuple[list[int], int]:
    """The row groups that hold rows ``first`` to ``last`` (0-based, end excluded), and
    the rows of the file before the first of them: a chunk decodes only those."""
    groups: list[int] = []
    before = at = 0
    for i in range(metadata.num_row_groups):
        n = metadata.row_group(i).num_rows
        if at < last and at + n > first:
            if not groups:
                before = at
            groups.append(i)
        at += n
    return groups, before


def extent(path: str, _size: int = 0, _gzipped: bool = False) -> Extent:
    """The rows of each row group in the file's footer; no rows if it cannot be read (the
    reader reports it)."""
    try:
        with open_input(path) as fh:
            metadata = pq.ParquetFile(fh).metadata
            groups = tuple(int(metadata.row_group(i).num_rows)
                           for i in range(metadata.num_row_groups))
    except Exception:  # noqa: BLE001 - an unreadable file is one dead letter when read
        return Extent(0)
    return Extent(sum(groups), groups)
