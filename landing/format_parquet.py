"""Parquet (``.parquet``): each row a record; positions are 1-based row numbers.

The footer gives the exact rows of each row group, so large files are cut into row
ranges along them (``landing.splitters.row_ranges``: small groups together, a large
group in a few equal pieces). A range decodes only the row groups
that hold its rows, each from its first row up to the range's end; pyarrow fetches the
column chunks of those groups whole (on gs://, a range inside a group downloads the
group). A file whose schema lacks a column the run requires is one rejection, from its
first chunk. A row that cannot be made Python values (a string that is not UTF-8, a
timestamp, date or duration beyond Python's range) is a rejection of its own (the rows
around it are read).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from landing.reading import Chunk, Item, ReadOptions, Rejection, check_columns, open_input
from landing.splitters import Extent


def read(chunk: Chunk, _gzipped: bool, opts: ReadOptions) -> Iterator[Item]:
    """The rows of ``chunk``; a file whose schema lacks a required column, or names a
    column twice, raises in each of its chunks (one rejection per row range, standing
    for its rows, whichever worker count cut them)."""
    with open_input(chunk.path, planned=chunk.planned) as fh:
        pf = pq.ParquetFile(fh)
        names = pf.schema_arrow.names
        check_columns(names, "Parquet schema")
        missing = [c for c in opts.required if c not in names]
        if missing:
            raise ValueError(f"the Parquet schema has no column "
                             f"{', '.join(map(repr, missing))} (columns: "
                             f"{', '.join(names) or 'none'})")
        first, last = chunk.start, (chunk.end if chunk.end >= 0 else pf.metadata.num_rows)
        groups, row_no = _row_groups(pf.metadata, first, last)  # row_no: rows before a batch
        if not groups:
            return
        for rb in pf.iter_batches(batch_size=opts.batch_size, row_groups=groups):
            lo, hi = max(first - row_no, 0), min(last - row_no, rb.num_rows)
            if lo < hi:
                for i, record in enumerate(_rows(rb.slice(lo, hi - lo))):
                    yield record, row_no + lo + i + 1
            row_no += rb.num_rows
            if row_no >= last:
                break


# What converting Arrow values to Python raises for a value it cannot convert: bytes
# that are not UTF-8 in a string column (Arrow's error or Python's), a timestamp, date
# or duration beyond Python's datetime range (OverflowError, ValueError).
_UNDECODABLE = (pa.ArrowException, UnicodeDecodeError)
_UNCONVERTIBLE = (*_UNDECODABLE, OverflowError, ValueError)
_NOT_UTF8 = "undecodable bytes (not UTF-8)"


def _rows(rb: pa.RecordBatch) -> list[dict[str, Any] | Rejection]:
    """The rows of a decoded batch as records; when the batch cannot be converted, each
    row on its own, and a row that still cannot is a rejection holding its values (a bad
    string as its bytes, a value out of Python's range as None), naming the columns."""
    try:
        return rb.to_pylist()
    except _UNCONVERTIBLE:
        pass
    rows: list[dict[str, Any] | Rejection] = []
    for i in range(rb.num_rows):
        try:
            rows.extend(rb.slice(i, 1).to_pylist())
        except _UNCONVERTIBLE:
            values, bad = _raw_row(rb.slice(i, 1))
            by_kind: dict[str, list[str]] = {}
            for name, kind in bad.items():
                by_kind.setdefault(kind, []).append(name)
            rows.append(Rejection("; ".join(
                f"{kind} in column {', '.join(map(repr, names))}"
                for kind, names in by_kind.items()), values))
    return rows


def _raw_row(row: pa.RecordBatch) -> tuple[dict[str, Any], dict[str, str]]:
    """One row's values, each column that cannot be decoded as its bytes (a nested one
    as None), a value out of Python's range as None; and what was wrong with each
    column that could not be converted."""
    values: dict[str, Any] = {}
    bad: dict[str, str] = {}
    for name, column in zip(row.schema.names, row.columns):
        try:
            values[name] = column.to_pylist()[0]
        except _UNDECODABLE:
            try:
                values[name] = column.cast(pa.binary()).to_pylist()[0]
            except pa.ArrowException:  # a nested column: not kept
                values[name] = None
            bad[name] = _NOT_UTF8
        except (OverflowError, ValueError) as exc:
            values[name] = None
            bad[name] = f"a value out of Python's range ({type(exc).__name__}: {exc})"
    return values, bad


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
