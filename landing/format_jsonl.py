"""JSONL (``.jsonl``, ``.ndjson``, each also gzipped): one JSON object a line.

Positions are 1-based line numbers; blank lines are not records. A byte-range chunk
owns the lines that start in it. A line over the read bound is one rejection, streamed
past without being held in memory. A byte-order mark opening the file is not part of
its first line. A record JSON cannot decode for its depth is malformed; one that
decodes but nests too deeply to travel between stages is dead-lettered by the
pipeline's one isolation rule (``transforms.records.impassable``), whatever its format.
"""

from __future__ import annotations

import codecs
import io
import json
from collections.abc import Iterator
from typing import Any

from landing.reading import (
    Chunk,
    Item,
    ReadOptions,
    Rejection,
    bounded_lines,
    open_input,
    too_long,
)


def read(chunk: Chunk, gzipped: bool, opts: ReadOptions) -> Iterator[Item]:
    """Every non-blank line of ``chunk`` as a record or a rejection, with its line."""
    bound = opts.max_line_bytes
    with open_input(chunk.path, gzipped) as raw:
        fh: Any = raw if gzipped else io.BufferedReader(raw, 1 << 20)  # type: ignore[type-var]
        lineno, pos = 0, chunk.start
        if chunk.start > 0:
            lineno = count_newlines(chunk.path, chunk.start - 1)
            fh.seek(chunk.start - 1)
            # finish the line owned by the previous chunk
            pos = chunk.start - 1 + next(bounded_lines(fh, bound), (b"", 0, 0))[1]
            lineno += 1
        lines = bounded_lines(fh, bound)
        while chunk.end < 0 or pos < chunk.end:
            line, size, _ = next(lines, (b"", 0, 0))
            if not size:
                break
            pos += size
            lineno += 1
            if line is None:
                yield too_long(chunk.path, lineno, size, bound), lineno
                continue
            if lineno == 1 and line.startswith(codecs.BOM_UTF8):
                line = line[len(codecs.BOM_UTF8):]
            if line.strip():  # blank lines are not records
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


def count_newlines(path: str, upto: int) -> int:
    """Newlines in the first ``upto`` bytes of an uncompressed file."""
    n, left = 0, upto
    with open_input(path) as fh:
        while left > 0:
            block = fh.read(min(left, 8 << 20))
            if not block:
                break
            n += block.count(b"\n")
            left -= len(block)
    return n
