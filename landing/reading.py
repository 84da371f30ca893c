"""The reading contract every input format implements.

A ``Chunk`` is a unit of reading work (a whole file, a byte range of one, or a row
range of one); a format's reader turns it into ``Item`` pairs: a record (a dict) or a
``Rejection`` (why a line or row is not a record, with its raw payload), each with its
position, a 1-based line or row number, or 0 for the whole file. ``ReadOptions`` carries
what a reader is told by the run, and ``open_input`` opens a file as the readers need it.

A chunk of a run carries its file as planning listed it (``Planned``: size and content
identity), and every open of it reads that content or raises ``InputChanged``: an
object in Cloud Storage is read at the generation listed (``landing.gcs``: gone once
overwritten or deleted, unless the bucket keeps versions), a local file, which cannot
be pinned, must have the planned size and modification time when opened and still
when its reader is done with it. A file replaced between planning and reading is
thus never read as a truncated mix of old and new.

Every byte of a file is in exactly one record, one rejection or a header (blank lines
aside, which are not records). A line longer than ``ReadOptions.max_line_bytes`` is
never materialised: ``bounded_lines`` streams it to its end and the reader rejects it,
naming the file and line.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, BinaryIO

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems


@dataclass(frozen=True)
class Planned:
    """A file as planning listed it (``landing.tranches.SourceFile``): its size and its
    content identity, ``generation N`` for an object in Cloud Storage, else the
    modification time ('' where none was listed: only the size is checked)."""

    size: int
    fingerprint: str


@dataclass(frozen=True)
class Chunk:
    """A unit of reading work: a file, a byte range of an uncompressed file, or a row
    range of a file (``start``/``end`` are bytes or rows, as the format splits).

    ``lines_before``: for a byte range, the lines that start before ``start`` (its
    records are numbered from the next); -1 when not known, and the reader counts them
    itself by reading the file up to ``start``. ``landing.formats.number_chunks`` sets
    it for all of a file's chunks in one pass over the file.

    ``planned``: the file as planning listed it; reading it raises ``InputChanged``
    when it is no longer that file. None reads whatever the path holds."""

    tranche: str
    path: str
    format: str
    start: int = 0
    end: int = -1  # -1 = to end of file
    index: int = 0
    est_rows: int = 0  # estimated records, for balancing chunks across workers
    lines_before: int = -1
    planned: Planned | None = None

    @property
    def key(self) -> str:
        digest = hashlib.sha1(self.path.encode()).hexdigest()[:12]
        return f"{digest}-{self.index:04d}"


@dataclass(frozen=True)
class Rejection:
    """A line or row that is not a record: the reason and the raw payload; ``changed``:
    the rest of a file that is no longer the one planned (``InputChanged``);
    ``unread``: for the rest of a file that cannot be read, the records it holds beyond
    this one, as estimated by planning (exact for a Parquet row range)."""

    reason: str
    payload: Any
    changed: bool = False
    unread: int = 0


Item = tuple["dict[str, Any] | Rejection", int]


def check_columns(names: list[str], kind: str) -> None:
    """Raises ``ValueError`` naming the first column name given twice: a record keyed
    by such a header would keep one of the two values, silently."""
    seen: dict[str, int] = {}
    for i, name in enumerate(names, start=1):
        if name in seen:
            raise ValueError(f"the {kind} names column {name!r} twice (columns {seen[name]} "
                             f"and {i}): which one holds the value is unknown")
        seen[name] = i


def line_bound(max_text_chars: int) -> int:
    """The longest line a reader materialises, in bytes: room for a text of
    ``max_text_chars`` characters fully escaped in JSON (12 bytes each: a character
    outside the Basic Multilingual Plane, an emoji, is a surrogate pair ``\\ud83d\\ude00``)
    and its other fields. A longer line cannot hold a valid record; it is streamed to
    its end unread."""
    return 12 * max_text_chars + (64 << 10)


DEFAULT_MAX_TEXT_CHARS = 100_000  # validation.max_text_chars's default
DEFAULT_LINE_BOUND = line_bound(DEFAULT_MAX_TEXT_CHARS)


@dataclass(frozen=True)
class ReadOptions:
    """What a reader is told: rows per decoded batch, the columns a record needs and
    the longest line (bytes) it materialises."""

    batch_size: int = 4096
    required: tuple[str, ...] = ()
    max_line_bytes: int = DEFAULT_LINE_BOUND


class NotAFile(OSError):
    """A local input path that is not a regular file (a device, a FIFO, a socket)."""


class InputChanged(OSError):
    """An input file that is no longer the one planning listed: replaced, rewritten or
    deleted since planning."""


@contextmanager
def open_input(path: str, gzipped: bool = False, read_block: int = 0,
               planned: Planned | None = None) -> Iterator[BinaryIO]:
    """``path`` opened for binary reading, decompressed when ``gzipped``. Python's gzip,
    not Beam's: it raises on a truncated stream instead of ending quietly. A local path
    (a link followed) must be a regular file: a device such as /dev/zero never ends and
    a FIFO blocks, so they raise ``NotAFile`` before being opened. ``read_block``: for
    an object in Cloud Storage, the bytes one request fetches (0: Beam's 16 MiB), so
    that a reader of a small byte range does not download 16 MiB for it.

    ``planned``: the file as planning listed it. An object in Cloud Storage is read at
    that generation; a local file is checked (one ``fstat``) when opened and again when
    its reader leaves the block without an error. Either raises ``InputChanged`` when the
    file is not, or no longer, the one planned."""
    check_regular(path)
    with _open_raw(path, read_block, planned) as raw:
        yield gzip.GzipFile(fileobj=raw, mode="rb") if gzipped else raw  # type: ignore[misc]
        if planned is not None and "://" not in path:
            _check_local(raw, planned, "while it was read")


def _open_raw(path: str, read_block: int, planned: Planned | None) -> BinaryIO:
    if planned is not None and path.startswith("gs://") and planned.fingerprint:
        from landing import gcs  # Cloud Storage's client, imported by its readers only

        return gcs.open_planned(path, read_block, planned)
    try:
        raw = _open_by_name(path, read_block)
    except FileNotFoundError as exc:
        if planned is None or "://" in path:
            raise
        raise InputChanged(f"deleted since planning ({planned.size:,} bytes listed)") from exc
    if planned is not None and "://" not in path:
        try:
            _check_local(raw, planned, "since planning")
        except BaseException:
            raw.close()
            raise
    return raw


def check_unchanged(path: str, planned: Planned | None) -> None:
    """Raises ``InputChanged`` unless the local file at ``path`` still has the planned
    size and modification time (one ``stat``; an object in Cloud Storage, read at its
    planned generation, and a file planned with nothing to compare pass)."""
    if planned is not None and "://" not in path:
        try:
            st = os.stat(path)
        except FileNotFoundError as exc:
            raise InputChanged(f"deleted while it was read ({planned.size:,} bytes "
                               "listed)") from exc
        _compare(st, planned, "while it was read")


def _check_local(raw: BinaryIO, planned: Planned, when: str) -> None:
    """Raises ``InputChanged`` unless the local file ``raw`` has the planned size and
    modification time (the file at its path once ``raw`` is closed: a reader's text
    wrapper, dropped, closes it)."""
    _compare(os.stat(raw.name) if raw.closed else os.fstat(raw.fileno()), planned, when)


def _compare(st: os.stat_result, planned: Planned, when: str) -> None:
    mtime = str(st.st_mtime)
    if st.st_size != planned.size or planned.fingerprint not in ("", mtime):
        raise InputChanged(f"changed {when}: listed at planning with {planned.size:,} bytes, "
                           f"modified at {planned.fingerprint or '?'}; now {st.st_size:,} "
                           f"bytes, modified at {mtime}")


def _open_by_name(path: str, read_block: int) -> BinaryIO:
    if read_block > 0 and path.startswith("gs://"):
        # Beam's filesystem has no block size to pass; its GcsIO (made with the
        # filesystem's pipeline options, as Beam's own open does) has.
        make_gcsio = getattr(FileSystems.get_filesystem(path), "_gcsIO", None)
        if make_gcsio is not None:
            raw: BinaryIO = make_gcsio().open(path, "rb", read_buffer_size=read_block)
            return raw
    return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)


def check_regular(path: str) -> None:
    """Raises ``NotAFile`` if ``path`` is local and not a regular file."""
    if "://" in path:
        return
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return  # opening it reports why
    if not stat.S_ISREG(mode):
        raise NotAFile("not a regular file (a device, FIFO or socket); not read")


def bounded_lines(fh: Any, bound: int) -> Iterator[tuple[bytes | None, int, int]]:
    """``(line, bytes, quotes)`` for each physical line of a binary stream, its newline
    kept; ``line`` is None for a line longer than ``bound`` bytes, which is read in
    pieces and dropped (``quotes`` then counts its double quotes, else it is 0)."""
    while True:
        line = fh.readline(bound + 1)
        if not line:
            return
        if len(line) <= bound:
            yield line, len(line), 0
            continue
        size, quotes = len(line), line.count(b'"')
        while not line.endswith(b"\n"):
            line = fh.readline(1 << 20)
            if not line:
                break
            size += len(line)
            quotes += line.count(b'"')
        yield None, size, quotes


def too_long(path: str, first: int, size: int, bound: int, last: int = 0) -> Rejection:
    """The rejection of a line (or lines) over the bound: named, never materialised."""
    lines = f"lines {first}-{last}" if last > first else f"line {first}"
    return Rejection(f"line too long: {path} {lines}: {size:,} bytes, over the {bound:,} "
                     f"bytes allowed by validation.max_text_chars; not read", None)


def encodes(text: str) -> bool:
    """Whether ``text`` is valid Unicode: it encodes as UTF-8 (no lone surrogate)."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def safe_text(text: str) -> str:
    """``text`` as valid Unicode: each lone surrogate written as an escape (an
    undecodable byte ``b"\\xe9"`` kept by ``surrogateescape`` as ``\\xe9``, any other as
    ``\\ud800``); ``text`` itself when it is valid."""
    if encodes(text):
        return text
    out = []
    for ch in text:
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:  # surrogateescape's stand-in for one byte
            out.append(f"\\x{code - 0xDC00:02x}")
        elif 0xD800 <= code <= 0xDFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)
