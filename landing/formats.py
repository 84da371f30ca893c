"""Record readers for the input formats: a chunk in, ``(record, position)`` pairs out.

``read_chunk`` yields every line or row of a chunk exactly once, as a dict or as a
``Rejection`` (why it could not be parsed, and its raw bytes or text). Positions are
1-based lines for JSONL and data rows for CSV and Parquet. A file that cannot be read
(corrupt Parquet, truncated gzip, permission denied, gone since planning) ends in one
``Rejection`` at position 0, the position of a whole file, whose reason names the
file, the error and how far reading got.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from landing.chunks import Chunk


@dataclass(frozen=True)
class Rejection:
    """A line or row that is not a record: the reason and the raw payload."""

    reason: str
    payload: Any


Item = tuple["dict[str, Any] | Rejection", int]


def read_chunk(chunk: Chunk, batch_size: int = 4096,
               required: tuple[str, ...] = ()) -> Iterator[Item]:
    """Every record of ``chunk`` with its position; an unreadable file (or rest of one)
    is one ``Rejection`` at position 0, and so is a Parquet file whose schema lacks one
    of the ``required`` columns (reported by the file's first chunk only)."""
    readers: dict[str, Callable[[Chunk, int], Iterator[Item]]] = {
        "jsonl": _jsonl, "jsonl.gz": _jsonl, "csv": _csv, "csv.gz": _csv,
        "parquet": partial(_parquet, required=required)}
    reader = readers[chunk.format]
    position = 0
    try:
        for item, position in reader(chunk, batch_size):
            yield item, position
    except Exception as exc:  # noqa: BLE001 - an unreadable file is one rejection
        where = f" after {'line' if 'jsonl' in chunk.format else 'row'} {position}" \
            if position else ""
        yield Rejection(f"unreadable {chunk.format} file: {chunk.path}{where}: "
                        f"{type(exc).__name__}: {str(exc)[:500]}", None), 0


def _jsonl(chunk: Chunk, _batch_size: int) -> Iterator[Item]:
    with FileSystems.open(chunk.path, compression_type=CompressionTypes.UNCOMPRESSED) as raw:
        # Python's gzip, not Beam's: it raises on a truncated stream instead of ending
        # quietly with a partial last line.
        fh: Any = gzip.GzipFile(fileobj=raw, mode="rb") if chunk.format == "jsonl.gz" else \
            io.BufferedReader(raw, 1 << 20)  # type: ignore[type-var]
        lineno, pos = 0, chunk.start
        if chunk.start > 0:
            lineno = count_newlines(chunk.path, chunk.start - 1)
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
            yield parse_json_line(line), lineno


def parse_json_line(line: bytes) -> dict[str, Any] | Rejection:
    """One JSONL line as a record, or why it is not one."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejection(f"undecodable bytes (not UTF-8): {exc}", line)
    try:
        obj = json.loads(text)
    except ValueError as exc:
        return Rejection(f"malformed JSON: {exc}", text)
    except RecursionError:
        return Rejection("malformed JSON: nested too deeply", text)
    if not isinstance(obj, dict):
        return Rejection("JSON line is not an object", text)
    return obj


def _csv(chunk: Chunk, _batch_size: int) -> Iterator[Item]:
    with FileSystems.open(chunk.path, compression_type=CompressionTypes.UNCOMPRESSED) as raw:
        fh: Any = gzip.GzipFile(fileobj=raw, mode="rb") if chunk.format == "csv.gz" else raw
        # utf-8-sig: Excel's "CSV UTF-8" starts with a byte-order mark.
        text = io.TextIOWrapper(fh, encoding="utf-8-sig", errors="surrogateescape",
                                newline="")
        yield from csv_records(text)


def csv_records(text: Any) -> Iterator[Item]:
    """Rows of a CSV text stream with a header line, as dicts keyed by the header."""
    reader = csv.reader(text, strict=True)
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as exc:  # nothing can be read without a header: the whole file
        yield Rejection(f"malformed CSV header: line {reader.line_num}: {exc}", None), 0
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
            yield Rejection(f"malformed CSV row: line {reader.line_num}: {exc}", None), row_no
            continue
        if not row:
            continue  # an empty line is not a row
        row_no += 1
        try:
            "".join(row).encode("utf-8")
        except UnicodeEncodeError:
            payload = ",".join(row).encode("utf-8", "surrogateescape")
            yield Rejection("undecodable bytes (not UTF-8)", payload), row_no
            continue
        if len(row) != width:
            yield Rejection(f"malformed CSV row: expected {width} fields, got {len(row)}",
                            row), row_no
            continue
        yield dict(zip(header, row)), row_no


def _parquet(chunk: Chunk, batch_size: int, required: tuple[str, ...] = ()) -> Iterator[Item]:
    """The rows of ``chunk``; a file whose schema lacks a ``required`` column raises in
    its first chunk (one rejection for the file) and yields nothing in the others."""
    with FileSystems.open(chunk.path, compression_type=CompressionTypes.UNCOMPRESSED) as fh:
        pf = pq.ParquetFile(fh)
        names = pf.schema_arrow.names
        missing = [c for c in required if c not in names]
        if missing and chunk.start <= 0:
            raise ValueError(f"the Parquet schema has no column "
                             f"{', '.join(map(repr, missing))} (columns: "
                             f"{', '.join(names) or 'none'})")
        if missing:
            return
        first, last = chunk.start, (chunk.end if chunk.end >= 0 else pf.metadata.num_rows)
        row_no = 0  # rows before this record batch
        for rb in pf.iter_batches(batch_size=batch_size):
            lo, hi = max(first - row_no, 0), min(last - row_no, rb.num_rows)
            if lo < hi:
                for i, record in enumerate(rb.slice(lo, hi - lo).to_pylist()):
                    yield record, row_no + lo + i + 1
            row_no += rb.num_rows
            if row_no >= last:
                break


def count_newlines(path: str, upto: int) -> int:
    """Newlines in the first ``upto`` bytes of an uncompressed file."""
    n, left = 0, upto
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as fh:
        while left > 0:
            block = fh.read(min(left, 8 << 20))
            if not block:
                break
            n += block.count(b"\n")
            left -= len(block)
    return n
