"""CSV (``.csv``, also gzipped) with a header line: each data row a record keyed by it.

Positions are 1-based data rows (the header is not one); empty lines are not rows. The
text is UTF-8, with or without the byte-order mark Excel's "CSV UTF-8" writes.

Rows are parsed by Python's csv module from physical lines this module feeds it, so
each row's lines are known. A row that breaks the quoting rules costs only its first
line: that line is rejected (naming it) and parsing resumes on the next line, so an
unclosed quote never swallows the rows after it. When the line where such a row broke
is not a row of its own, a quoted field spanning lines closed there and was followed by
other characters (``last" oops``): each of its lines is a rejection naming it, none is
read as a row. A row longer than the read bound is one rejection spanning its lines,
skipped without being held, its quoting followed as csv does (``_Quoting``: a quote
opens a field only at its start); when its quoted field closes against the rules
(other characters after the closing quote) on a line that is a row of its own, the
quote that opened it was never closed: its first line is rejected and parsing resumes
on the next, as for a short row.

Clean files take a fast path: csv.reader straight over bounded lines (no per-line
bookkeeping), as fast as an untracked parse. The first row that fails to parse or
grows past the bound hands the rest of the file, from that row's first line on, to the
tracked parse above.
"""

from __future__ import annotations

import csv
import io
import re
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from typing import Any

from landing.reading import (
    DEFAULT_LINE_BOUND,
    Chunk,
    Item,
    ReadOptions,
    Rejection,
    check_columns,
    open_input,
    too_long,
)

# (line number, text or None if too long, characters, quotes); line number -1: the end
Line = tuple[int, "str | None", int, int]
csv.field_size_limit(sys.maxsize)  # rows are bounded by the line feed, not per field


class _TooLong(Exception):
    """The row being parsed has grown past the bound."""


def read(chunk: Chunk, gzipped: bool, opts: ReadOptions) -> Iterator[Item]:
    """Every data row of the file as a record or a rejection, with its row number:
    parsed fast until a row fails or grows past the bound, then from that row on by
    the tracked parse, which knows each row's lines."""
    bound = opts.max_line_bytes
    with ExitStack() as files:

        def lines_from(start: int) -> _Feed:
            feed = _Feed(_open_text(files, chunk, gzipped).readline, bound)
            feed.skip_lines(start - 1)
            return feed

        fast = _Fast(_open_text(files, chunk, gzipped).readline, bound)
        yield from fast.rows()
        if fast.resume_at:
            yield from parse_lines(lines_from(fast.resume_at), bound, chunk.path, lines_from,
                                   header=fast.header, row_no=fast.row_no)


def _open_text(files: ExitStack, chunk: Chunk, gzipped: bool) -> io.TextIOWrapper:
    fh = files.enter_context(open_input(chunk.path, gzipped, planned=chunk.planned))
    return io.TextIOWrapper(fh, encoding="utf-8-sig", errors="surrogateescape", newline="")


class _Fast:
    """The fast parse: csv.reader straight over bounded lines, line numbers from
    ``reader.line_num``. It stops at the first row that fails to parse or grows past
    the bound, leaving ``resume_at`` (that row's first line), the header and the rows
    so far for the tracked parse to go on from; ``resume_at`` 0: the file is done."""

    def __init__(self, readline: Callable[[int], str], bound: int):
        self._readline = readline
        self._bound = bound
        self._size = 0  # characters of the row being parsed
        self.header: list[str] | None = None
        self.row_no = 0
        self.resume_at = 0

    def _lines(self) -> Iterator[str]:
        readline, bound = self._readline, self._bound
        while line := readline(bound + 1):
            self._size += len(line)
            if self._size > bound:
                raise _TooLong
            yield line

    def rows(self) -> Iterator[Item]:
        reader = csv.reader(self._lines(), strict=True)
        done = 0  # the last line of the last row parsed
        try:
            for fields in reader:
                done, self._size = reader.line_num, 0
                if not fields:
                    continue  # an empty line is not a row
                if self.header is None:
                    check_columns(fields, "CSV header")
                    self.header = fields
                    continue
                self.row_no += 1
                yield _record(self.header, fields), self.row_no
        except (csv.Error, _TooLong):
            self.resume_at = done + 1


def csv_records(text: Iterable[str], bound: int = DEFAULT_LINE_BOUND) -> Iterator[Item]:
    """Rows of CSV text lines (a text stream opened with ``newline=""``) with a header."""
    lines = iter(text)
    return parse_lines(_Feed(lambda _limit: next(lines, ""), bound), bound, "")


_OUTSIDE = re.compile(r'[",\r\n]')  # what changes the quoting outside a quoted field


class _Quoting:
    """Where csv's quoting stands after the text fed so far of one row: inside a quoted
    field or not. As csv reads it: a quote opens a field only at the field's start (a
    quote inside an unquoted field, ``27" screen``, is a character); inside, a doubled
    quote is a quote and a single one closes the field. Jumps between quotes, commas and
    line ends, so a long line costs a few searches, not a step per character."""

    def __init__(self) -> None:
        self.inside = False
        self.broke = False  # the last quoted field closed was followed by other characters
        self._field_start = True
        self._quote_last = False  # inside, the text fed so far ended on a quote

    @property
    def open(self) -> bool:
        """Whether the row is inside a quoted field (a quote that ended the text fed so
        far closes it unless a quote follows)."""
        return self.inside and not self._quote_last

    def feed(self, text: str) -> None:
        i, n = 0, len(text)
        if self._quote_last and n:
            self._quote_last = False
            if text[0] == '"':
                i = 1  # a doubled quote: still inside
            else:
                self.inside = self._field_start = False
                self.broke = text[0] not in ",\r\n"
        while i < n:
            if self.inside:
                j = text.find('"', i)
                if j < 0:
                    return
                if j + 1 == n:
                    self._quote_last = True
                    return
                if text[j + 1] == '"':
                    i = j + 2
                    continue
                self.inside = self._field_start = False
                self.broke = text[j + 1] not in ",\r\n"
                i = j + 1
                continue
            m = _OUTSIDE.search(text, i)
            if m is None:
                self._field_start = False
                return
            j = m.start()
            if text[j] == '"':
                self.inside = self._field_start and j == i
                self._field_start = False
            else:  # a comma or a line end: a field starts
                self._field_start = True
            i = j + 1

    @classmethod
    def of(cls, lines: list[str]) -> _Quoting:
        quoting = cls()
        for line in lines:
            quoting.feed(line)
        return quoting


class _Feed:
    """The lines csv.reader pulls, numbered, at most ``bound`` characters each, and
    remembering those of the row being parsed (``first``, ``row``); lines can be put
    back to be parsed again. A longer line is read in pieces, its quoting followed
    (``long_quoting``), and never kept. A ``\r\n`` is never split between two reads
    (``_read``), so every reader of the lines counts them alike."""

    def __init__(self, readline: Callable[[int], str], bound: int):
        self._readline = readline
        self._bound = bound
        self._carry = ""  # a character read ahead to see whether a "\r" ended its line
        self._again: deque[str] = deque()
        self.row: list[str] = []
        self.first = 1  # line number of the row's first line
        self.lineno = 0  # line number of the last line handed out
        self.size = 0  # characters of the row
        self.long_quoting: _Quoting | None = None  # of the row an over-long line ended
        self.last_line: str | None = None  # the last line ``skip_quoted`` went past
        self.closed_broke = False  # whether the field it closed broke the quoting rules

    def __iter__(self) -> _Feed:
        return self

    def _read(self, limit: int) -> str:
        """``readline(limit)``, but a line cut right after its "\r" by the limit gets
        its "\n" too (one character over the limit), as a read without a limit would."""
        carry, self._carry = self._carry, ""
        if carry == "\r":
            text = carry
        else:
            text = carry + (self._readline(limit - len(carry)) if limit > len(carry) else "")
        if text.endswith("\r") and (len(text) >= limit or text is carry):
            after = self._readline(1)
            if after == "\n":
                text += after
            else:
                self._carry = after
        return text

    def __next__(self) -> str:
        text = self._again.popleft() if self._again else self._read(self._bound + 1)
        if not text:
            raise StopIteration
        self.lineno += 1
        self.size += len(text)
        self.row.append(text)
        if self.size > self._bound:
            if len(text) > self._bound:
                self.row.pop()
                self.long_quoting = _Quoting.of(self.row)
                self.size = self._drain(text, self.size - len(text), self.long_quoting)
            raise _TooLong
        return text

    def _drain(self, text: str, size: int, quoting: _Quoting | None = None) -> int:
        """Past the rest of the line ``text`` begins, its quoting followed; the row's
        characters with it."""
        while text:
            size += len(text)
            if quoting is not None:
                quoting.feed(text)
            if text[-1] in "\r\n":
                break
            text = self._read(1 << 20)
        return size

    def skip_lines(self, upto: int) -> None:
        """Past line ``upto`` without keeping the lines."""
        while self.lineno < upto:
            text = self._read(1 << 20)
            if not text:
                return
            self._drain(text, 0)
            self.lineno += 1

    def start_row(self) -> None:
        self.row, self.size, self.first, self.long_quoting = [], 0, self.lineno + 1, None
        self.last_line, self.closed_broke = None, False

    def again(self) -> None:
        """Put back every line of the row but its first, to be parsed again."""
        self._again.extendleft(reversed(self.row[1:]))
        self.lineno = self.first

    def skip_quoted(self) -> tuple[int, int, bool]:
        """Past an over-long row: lines until it is outside a quoted field at a line's
        end, not kept (but the last one, when within the bound, in ``last_line``).
        Returns (last line, characters, whether its quoted field closed before the end)."""
        quoting = self.long_quoting or _Quoting.of(self.row)
        size = self.size
        while quoting.open:
            text = self._again.popleft() if self._again else self._read(1 << 20)
            if not text:
                return self.lineno, size, False
            whole = text[-1] in "\r\n" and len(text) <= self._bound
            size = self._drain(text, size, quoting)
            self.lineno += 1
            self.last_line = text if whole else None
        self.closed_broke = quoting.broke
        return self.lineno, size, True


def parse_lines(feed: _Feed, bound: int, path: str,
                reopen: Callable[[int], _Feed] | None = None,
                header: list[str] | None = None, row_no: int = 0) -> Iterator[Item]:
    """Records and rejections of CSV lines, the first non-empty row being the header
    (unless ``header`` is given, ``row_no`` rows having been read before ``feed``);
    ``reopen(n)`` restarts the lines at line n (to resume after an unclosed quote
    found only at the end of the file)."""
    reader = csv.reader(feed, strict=True)
    while True:
        feed.start_row()
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            items = _broken(feed, header, exc)
            reader = csv.reader(feed, strict=True)
        except _TooLong:
            item, feed = _over_long(feed, bound, path, reopen, header)
            items = [item]
            reader = csv.reader(feed, strict=True)
        else:
            if not fields:
                continue  # an empty line is not a row
            if header is None:
                check_columns(fields, "CSV header")
                header = fields
                continue
            items = [_record(header, fields)]
        if header is None:  # nothing can be read without a header: the whole file
            yield Rejection(f"malformed CSV header: {items[0].reason}", None), 0
            return
        for item in items:
            row_no += 1
            yield item, row_no


def _broken(feed: _Feed, header: list[str] | None, exc: csv.Error) -> list[Any]:
    """The rejections of a row that breaks the quoting rules. When it spans lines, the
    quote that ended its quoted field follows other characters of that line (``last"
    oops``) and that line is no row of its own, the field closed there and was followed
    by other characters: each of its lines is a rejection (none is read as a row) and
    parsing resumes after it. Otherwise (a quote at the start of a line or after a
    comma opens a field; a line that is a row of its own holds a stray quote) the quote
    that opened the row was never closed: only its first line is rejected, and parsing
    resumes on the next."""
    first, last, lines = feed.first, feed.lineno, feed.row
    if len(lines) > 1 and _closes_text(lines[-1]) and not _is_row(lines[-1], header):
        return [Rejection(f"malformed CSV row: line {first + i}: in a quoted field of lines "
                          f"{first}-{last} that closes and is followed by other "
                          f"characters: {exc}", text) for i, text in enumerate(lines)]
    feed.again()
    return [Rejection(f"malformed CSV row: line {first}: {exc}", lines[0] if lines else None)]


def _closes_text(line: str) -> bool:
    """Whether the first lone quote of ``line`` (a doubled quote is a quote inside a
    field) follows other characters than a comma: it ends text rather than opening a
    field."""
    at = 0
    while (at := line.find('"', at)) != -1 and line.startswith('""', at):
        at += 2
    return at > 0 and line[at - 1] != ","


def _is_row(line: str, header: list[str] | None) -> bool:
    """Whether ``line`` alone is a well-formed row as wide as the header."""
    if header is None:
        return False
    try:
        rows = list(csv.reader([line], strict=True))
    except csv.Error:
        return False
    return len(rows) == 1 and len(rows[0]) == len(header)


def _over_long(feed: _Feed, bound: int, path: str, reopen: Callable[[int], _Feed] | None,
               header: list[str] | None) -> tuple[Rejection, _Feed]:
    """The rejection of a row over the bound: the lines up to where its quoted field
    closes, or, when it never does, or closes against the quoting rules (other
    characters follow the closing quote) on a line that is a row of its own (a stray
    quote there, ``a 12" ruler``: the quote that opened the field was the unclosed one),
    and the file can be reread, its first line only, parsing resuming on the next. A
    field that closes as the rules say is one, however its last line reads."""
    first, kept, first_size = feed.first, len(feed.row), feed.size
    last, size, closed = feed.skip_quoted()
    stray = (closed and feed.closed_broke and last > first and feed.last_line is not None
             and _is_row(feed.last_line, header))
    if (closed and not stray) or reopen is None:
        return too_long(path or "CSV", first, size, bound, last), feed
    if kept:
        return Rejection(f"malformed CSV row: line {first}: a quote that is never closed",
                         feed.row[0]), reopen(first + 1)
    return too_long(path or "CSV", first, first_size, bound), reopen(first + 1)


def _record(header: list[str], row: list[str]) -> dict[str, Any] | Rejection:
    try:
        "".join(row).encode("utf-8")
    except UnicodeEncodeError:
        payload = ",".join(row).encode("utf-8", "surrogateescape")
        return Rejection("undecodable bytes (not UTF-8)", payload)
    if len(row) != len(header):
        return Rejection(f"malformed CSV row: expected {len(header)} fields, got {len(row)}",
                         row)
    return dict(zip(header, row))
