"""CSV (``.csv``, also gzipped) with a header line: each data row a record keyed by it.

Positions are 1-based data rows (the header is not one); empty lines are not rows. The
text is UTF-8, with or without the byte-order mark Excel's "CSV UTF-8" writes.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any

from landing.reading import Chunk, Item, ReadOptions, Rejection, open_input


def read(chunk: Chunk, gzipped: bool, _opts: ReadOptions) -> Iterator[Item]:
    """Every data row of the file as a record or a rejection, with its row number."""
    with open_input(chunk.path, gzipped) as fh:
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
        yield _record(header, width, row), row_no


def _record(header: list[str], width: int, row: list[str]) -> dict[str, Any] | Rejection:
    try:
        "".join(row).encode("utf-8")
    except UnicodeEncodeError:
        payload = ",".join(row).encode("utf-8", "surrogateescape")
        return Rejection("undecodable bytes (not UTF-8)", payload)
    if len(row) != width:
        return Rejection(f"malformed CSV row: expected {width} fields, got {len(row)}", row)
    return dict(zip(header, row))
