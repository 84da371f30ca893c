"""The input formats, in one registry: what each is called, which files it reads, how
it reads them, how it cuts them into chunks and how many rows it expects.

Every list of supported formats (planning, ``train``, the plan's output, help texts) is
derived from ``FORMATS``; adding a format is one ``Format`` entry here and its reader.
A format with ``gzip`` also reads its files gzipped (``<suffix>.gz``, format name
``<name>.gz``). ``number_chunks`` gives a file's chunks what their reader needs to know
of the file before their start (a JSONL byte range: the lines before it), in one pass
for all of them (a file it cannot number is read as one chunk). ``read_chunk`` yields
every line or row of a chunk exactly once, as a record or a ``Rejection``; a file that
cannot be read (corrupt, truncated gzip, permission denied, replaced or gone since
planning: ``InputChanged``) ends in one ``Rejection`` per chunk whose reason names the
file, the error and how far reading got: at position 0 for the file's first chunk (the
file, or the rest of it), at the first record not read for a later chunk, so that the
rejections of one file never share a position.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from landing import format_csv, format_jsonl, format_parquet, sampling, splitters
from landing.reading import (
    DEFAULT_MAX_TEXT_CHARS,
    Chunk,
    InputChanged,
    Item,
    ReadOptions,
    Rejection,
    check_unchanged,
    line_bound,
)
from landing.splitters import Extent, Splitter

_LOG = logging.getLogger(__name__)
Reader = Callable[[Chunk, bool, ReadOptions], Iterator[Item]]
Estimator = Callable[[str, int, bool], Extent]  # (path, size, gzipped) -> rows (and groups)
Numberer = Callable[[Sequence[Chunk]], list[Chunk]]  # one file's chunks, numbered

__all__ = ["FORMATS", "Format", "Rejection", "describe_formats", "file_format",
           "format_names", "number_chunks", "read_chunk", "resolve"]


@dataclass(frozen=True)
class Format:
    """One input format: its name and suffixes, its reader (chunk -> items with
    positions), its splitter (file -> chunks), its row estimate (file -> ``Extent``: rows,
    and the rows of each row group where it stores them in groups) and, for
    a format whose chunks need to know what precedes them, its numberer (one file's
    uncompressed chunks -> the same chunks told it, in one pass over the file)."""

    name: str
    label: str  # as a user calls it: "JSONL"
    suffixes: tuple[str, ...]
    reader: Reader
    splitter: Splitter
    estimate: Estimator
    unit: str = "line"  # what a position counts: "line" or "row"
    gzip: bool = False  # also read gzipped: <suffix>.gz, named <name>.gz
    numberer: Numberer | None = None


FORMATS: tuple[Format, ...] = (
    Format("jsonl", "JSONL", (".jsonl", ".ndjson"), format_jsonl.read, splitters.byte_ranges,
           sampling.line_extent, unit="line", gzip=True, numberer=format_jsonl.number_lines),
    Format("csv", "CSV", (".csv",), format_csv.read, splitters.whole, sampling.csv_extent,
           unit="row", gzip=True),
    Format("parquet", "Parquet", (".parquet",), format_parquet.read, splitters.row_ranges,
           format_parquet.extent, unit="row"),
)

_GZ = ".gz"


def _variants() -> dict[str, tuple[Format, bool]]:
    """Format name -> (format, gzipped), gzipped first so that suffixes match longest."""
    return {**{f.name + _GZ: (f, True) for f in FORMATS if f.gzip},
            **{f.name: (f, False) for f in FORMATS}}


def resolve(name: str) -> tuple[Format, bool]:
    """The format named ``name`` (as ``file_format`` names it) and whether it is gzipped."""
    return _variants()[name]


def file_format(path: str) -> str | None:
    """The input format of ``path`` by its suffix (any case), or None if it is not input."""
    lower = path.lower()
    for name, (fmt, gzipped) in _variants().items():
        if any(lower.endswith(s + (_GZ if gzipped else "")) for s in fmt.suffixes):
            return name
    return None


def describe_formats() -> str:
    """The files read, as globs: ``*.jsonl, *.ndjson, *.csv (each also .gz) or *.parquet``."""
    plain = [f"*{s}" for f in FORMATS if f.gzip for s in f.suffixes]
    rest = [f"*{s}" for f in FORMATS if not f.gzip for s in f.suffixes]
    return _or(([", ".join(plain) + " (each also .gz)"] if plain else []) + rest)


def format_names() -> str:
    """The formats as a user calls them: ``JSONL, CSV or Parquet``."""
    return _or([f.label for f in FORMATS])


def _or(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]


def number_chunks(chunks: Sequence[Chunk]) -> list[Chunk]:
    """The chunks of one file, numbered by its format (at most one pass over the file;
    see ``Format``); as they are when it has no numberer, and when the file cannot be
    read, which their readers then report."""
    chunks = list(chunks)
    if not chunks:
        return chunks
    fmt, gzipped = resolve(chunks[0].format)
    if fmt.numberer is None or gzipped:
        return chunks
    try:
        return fmt.numberer(chunks)
    except Exception as exc:  # noqa: BLE001 - the file's reader reports it
        _LOG.warning("%s: not numbered (%s: %s); its %d chunks are read as one",
                     chunks[0].path, type(exc).__name__, exc, len(chunks))
        return [dataclasses.replace(chunks[0], start=0, end=-1, index=0,
                                    est_rows=sum(c.est_rows for c in chunks))]


def read_chunk(chunk: Chunk, batch_size: int = 4096, required: tuple[str, ...] = (),
               max_text_chars: int = DEFAULT_MAX_TEXT_CHARS) -> Iterator[Item]:
    """Every record of ``chunk`` with its position; an unreadable file (or rest of one)
    is one ``Rejection`` at position 0, and so is a file whose schema lacks one of the
    ``required`` columns (Parquet: one for each row range). Lines longer than
    ``line_bound(max_text_chars)`` are rejected unread.

    The rejection of an unreadable rest of a file carries the records it is estimated
    to hold beyond itself (``Rejection.unread``: the chunk's planned estimate less what
    was read of it), which the run counts in its dead-letter share.

    A local file is checked against its plan (``check_unchanged``) before each
    ``batch_size`` records read are passed on, and by its reader once more at its end:
    what was read of a file changed meanwhile is not passed on but rejected with the
    rest (``InputChanged``), so no record of it is scored that was read after the
    change (a change mid-read keeps the records passed on before it)."""
    fmt, gzipped = resolve(chunk.format)
    opts = ReadOptions(batch_size, required, line_bound(max_text_chars))
    checked = chunk.planned is not None and "://" not in chunk.path  # a local file
    held: list[Item] = []  # read, not yet passed on
    passed = 0  # the position of the last item passed on
    count = 0  # items passed on
    try:
        for item in fmt.reader(chunk, gzipped, opts):
            if not checked:
                passed, count = item[1], count + 1
                yield item
                continue
            held.append(item)
            if len(held) > batch_size:  # the file is still the one planned: pass them on
                check_unchanged(chunk.path, chunk.planned)
                passed, count = held[-2][1], count + len(held) - 1
                yield from held[:-1]
                del held[:-1]
        yield from held  # the reader checked the file once more as it ended
    except Exception as error:  # noqa: BLE001 - an unreadable file is one rejection
        exc: Exception = error
        if held and not isinstance(exc, InputChanged):
            try:  # what was read before the error, of the file planned, is passed on
                check_unchanged(chunk.path, chunk.planned)
            except InputChanged as changed:
                exc = changed
            else:
                yield from held
                passed, count, held = held[-1][1], count + len(held), []
        # What was read since the last check is not passed on: its first item's position
        # is where the rejection starts (never past the chunk: keys stay unique).
        read_to = max(0, held[0][1] - 1) if held else passed
        if chunk.start <= 0:  # the file, or the rest of it
            position, where = 0, (f" after {fmt.unit} {read_to}" if read_to else "")
        else:  # the rest of a later chunk: from its first record not passed on
            position = read_to + 1 if read_to else _first_position(chunk, fmt)
            where = f" from {fmt.unit} {position}" if position else f" from byte {chunk.start}"
        yield Rejection(f"unreadable {chunk.format} file: {chunk.path}{where}: "
                        f"{type(exc).__name__}: {str(exc)[:500]}", None,
                        changed=isinstance(exc, InputChanged),
                        # a changed file is not lost: its tranche is scored again
                        unread=0 if isinstance(exc, InputChanged)
                        else max(0, chunk.est_rows - count - 1)), position


def _first_position(chunk: Chunk, fmt: Format) -> int:
    """The position of the first record of a chunk that starts after the file's start:
    a row range's first row, a byte range's first line where it is numbered (0 where
    it is not: the chunk cannot tell)."""
    if fmt.unit == "row":
        return chunk.start + 1
    return chunk.lines_before + 1 if chunk.lines_before >= 0 else 0
