"""JSONL (``.jsonl``, ``.ndjson``, each also gzipped): one JSON object a line.

Positions are 1-based line numbers; blank lines are not records. A byte-range chunk
owns the lines that start in it; ``number_lines`` counts the lines before each of a
file's chunks in one pass, so that no chunk reads the file up to its start. A line
over the read bound is one rejection, streamed past without being held in memory. A
byte-order mark opening the file is not part of its first line. A record JSON cannot
decode for its depth is malformed; one that decodes but nests too deeply to travel
between stages is dead-lettered by the pipeline's one isolation rule
(``transforms.records.impassable``), whatever its format.
"""

from __future__ import annotations

import codecs
import dataclasses
import io
import json
from collections.abc import Iterator, Sequence
from typing import Any

from landing.reading import (
    Chunk,
    Item,
    Planned,
    ReadOptions,
    Rejection,
    bounded_lines,
    open_input,
    too_long,
)

# The reader's buffer: a byte range of a local file reads at most this much past the end
# of its last line. From Cloud Storage a range is fetched in one request of its length
# plus this (at most _MAX_BLOCK, Beam's own block).
_BUFFER = 64 << 10
_MAX_BLOCK = 16 << 20


def read(chunk: Chunk, gzipped: bool, opts: ReadOptions) -> Iterator[Item]:
    """Every non-blank line of ``chunk`` as a record or a rejection, with its line."""
    bound = opts.max_line_bytes
    span = chunk.end - chunk.start + 1 + _BUFFER if chunk.end >= 0 else 0  # 0: whole file
    with open_input(chunk.path, gzipped, read_block=min(span, _MAX_BLOCK),
                    planned=chunk.planned) as raw:
        fh: Any = raw if gzipped else io.BufferedReader(raw, _BUFFER)  # type: ignore[type-var]
        lineno, pos = 0, chunk.start
        if chunk.start > 0:
            lineno = chunk.lines_before
            if lineno < 0:
                lineno = count_newlines(chunk.path, chunk.start - 1, chunk.planned) + 1
            fh.seek(chunk.start - 1)
            # finish the line owned by the previous chunk
            pos = chunk.start - 1 + next(bounded_lines(fh, bound), (b"", 0, 0))[1]
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
            if line.strip(b" \t\r\n"):  # blank lines (JSON's whitespace) are not records
                yield parse_json_line(line), lineno


class _DuplicateKey(ValueError):
    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object's pairs as a dict, unless it names a key twice (``json`` would keep
    the last value, silently: as a CSV header or Parquet schema naming a column twice,
    which value is the record's is unknown)."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return obj


_DECODER = json.JSONDecoder(object_pairs_hook=_unique_keys)


def parse_json_line(line: bytes) -> dict[str, Any] | Rejection:
    """One JSONL line as a record, or why it is not one (an object at any depth naming a
    key twice is not one)."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejection(f"undecodable bytes (not UTF-8): {exc}", line)
    try:
        obj = _DECODER.decode(text)
    except _DuplicateKey as exc:
        key = exc.key if len(exc.key) <= 100 else exc.key[:99] + "…"
        return Rejection(f"JSON object names key {key!r} twice: which value holds is "
                         "unknown", text)
    except ValueError as exc:
        return Rejection(f"malformed JSON: {exc}", text)
    except RecursionError:
        return Rejection("malformed JSON: nested too deeply", text)
    if not isinstance(obj, dict):
        return Rejection("JSON line is not an object", text)
    return obj


def count_newlines(path: str, upto: int, planned: Planned | None = None) -> int:
    """Newlines in the first ``upto`` bytes of an uncompressed file (as ``planned``)."""
    return _newlines_at(path, [upto], planned)[0][0]


def number_lines(chunks: Sequence[Chunk]) -> list[Chunk]:
    """The byte-range chunks of one uncompressed file, each with ``lines_before`` set,
    counted in one pass over the file up to the last chunk's start. A chunk in which no
    line starts (inside one long line) owns nothing: it is joined to the chunk after it
    (which then starts inside that line, and owns the same lines), so that no chunk
    reports a failure at a line it does not own: a rejection's position is its own. A
    file shorter than planned leaves the chunks that start past its end unnumbered
    (their readers report what they find)."""
    if len({c.path for c in chunks}) > 1:
        raise ValueError("number_lines numbers the chunks of one file")
    starts = sorted({c.start for c in chunks if c.start > 0})
    lines = {0: 0}
    if starts:
        counts = _newlines_at(chunks[0].path, [s - 1 for s in starts], chunks[0].planned)
        lines |= {s: n + 1 for s, (n, reached) in zip(starts, counts) if reached}
    out: list[Chunk] = []
    for c in sorted(chunks, key=lambda c: c.start):
        before = lines.get(c.start, -1)
        if out and before >= 0 and before == out[-1].lines_before and out[-1].end == c.start:
            out[-1] = dataclasses.replace(out[-1], end=c.end,
                                          est_rows=out[-1].est_rows + c.est_rows)
        else:
            out.append(dataclasses.replace(c, lines_before=before))
    return out


def _newlines_at(path: str, offsets: Sequence[int],
                 planned: Planned | None = None) -> list[tuple[int, bool]]:
    """For each of the ascending ``offsets``: the newlines in the file's first
    ``offset`` bytes, and whether the file is that long; one pass through one reused
    1 MiB buffer, of the file as ``planned`` (``InputChanged`` if it is not)."""
    out: list[tuple[int, bool]] = []
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    n = pos = 0
    with open_input(path, planned=planned) as raw:
        fh: Any = raw  # a buffered binary stream: readinto
        for offset in offsets:
            while pos < offset:
                got = fh.readinto(view[:min(len(buf), offset - pos)])
                if not got:
                    break
                n += buf.count(b"\n", 0, got)
                pos += got
            out.append((n, pos >= offset))
    return out
