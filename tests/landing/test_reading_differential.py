"""Differential fuzz test of the readers (hypothesis): generated JSONL and CSV files
(quotes, embedded newlines, CRLF, BOMs, latin-1 bytes, long fields, truncated gzip) are
read by beamscore and, line by line or row by row, by an independent reference parse
(Python's json per line, Python's csv per row). Records plus rejections cover every line
or row exactly once, in order: none lost, none read twice, no record invented.

The files are written from a model (a list of lines or rows, each good or broken in one
known way), so each position's expected outcome is known: a good one is the record the
reference parse makes of its own bytes, a broken one a rejection of the kind its fault
calls for, naming its first line. A truncated gzip file is read up to where it breaks,
then is one rejection at position 0."""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import json
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from landing.formats import Rejection, number_chunks, read_chunk
from landing.reading import Chunk, line_bound

MAX_TEXT = 2000  # validation.max_text_chars of these reads
BOUND = line_bound(MAX_TEXT)  # 77,536 bytes
SETTINGS = settings(max_examples=250, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow, HealthCheck.data_too_large])

LETTER = st.sampled_from("abcdefghijklmnopqrstuvwxyz")
# what a text may hold: quotes, commas, newlines of any kind, accents, emoji
TAIL = st.lists(st.sampled_from(list("ab ,\"'\n\r\t;é€✓🙂\\") + ["\r\n"]),
                max_size=30).map("".join)
TEXT = st.builds(lambda a, b: a + b, LETTER, TAIL)
ROW_SHAPED = "\nvictim-doc,an invented text,billing\n"


@dataclass
class Expected:
    """One position's outcome: the record, or the start of the rejection's reason."""

    record: dict[str, Any] | None = None
    reason: str = ""


def _read(path: Path, fmt: str, cuts: list[int] | None = None,
          numbered: bool = False) -> list[tuple[Any, int]]:
    """The items of the file read whole, or as byte ranges cut at ``cuts``: each range
    counting the lines before it itself, or ``numbered`` (``number_chunks``) first."""
    if not cuts:
        return list(read_chunk(Chunk("t", str(path), fmt), max_text_chars=MAX_TEXT))
    size = path.stat().st_size
    bounds = sorted({c % size for c in cuts} - {0}) if size else []
    chunks = [Chunk("t", str(path), fmt, start, end, i)
              for i, (start, end) in enumerate(zip([0, *bounds], [*bounds, size]))]
    if numbered:
        chunks = number_chunks(chunks)
        assert all(c.lines_before >= 0 for c in chunks)
    return [item for chunk in chunks for item in read_chunk(chunk, max_text_chars=MAX_TEXT)]


def _gzip_prefix(data: bytes) -> bytes:
    """What decompresses from a (possibly truncated) gzip stream."""
    return zlib.decompressobj(wbits=31).decompress(data)


def _write(path: Path, data: bytes, gzipped: bool, cut: float | None) -> bytes:
    """Writes the file (gzipped, cut short at ``cut`` of its length); returns what a
    reader can decompress of it."""
    if gzipped:
        packed = gzip.compress(data)
        if cut is not None:
            packed = packed[:max(10, int(len(packed) * cut))]
        path.write_bytes(packed)
        return _gzip_prefix(packed) if cut is not None else data
    path.write_bytes(data)
    return data


def _compare(items: list[tuple[Any, int]], expected: list[tuple[int, Expected]],
             truncated: bool, complete: int) -> None:
    """``items`` are ``expected`` in order, or, for a truncated file, a prefix of them
    (at least its first ``complete`` minus one) and then one whole-file rejection."""
    if truncated:  # what the cut leaves of the row it cuts is read as it looks now
        assert items and items[-1][1] == 0 and isinstance(items[-1][0], Rejection), items[-1:]
        assert items[-1][0].reason.startswith("unreadable "), items[-1][0].reason
        items = items[:-1]
        positions = [p for _, p in items]
        assert positions == sorted(set(positions))  # each once, in order
        sure = max(0, complete - 1)  # the rows whole before the cut, the last one aside
        assert len(items) >= sure
        items, expected = items[:sure], expected[:sure]
    assert [p for _, p in items] == [p for p, _ in expected]  # each position once, in order
    for (item, pos), (_, want) in zip(items, expected):
        if want.record is not None:
            assert item == want.record, (pos, item)
        else:
            assert isinstance(item, Rejection), (pos, item)
            assert item.reason.startswith(want.reason), (pos, item.reason, want.reason)


# ---- JSONL --------------------------------------------------------------------------

JSON_LINE = st.one_of(
    st.builds(lambda i, t, a: ("good", json.dumps({"id": i, "text": t}, ensure_ascii=a)),
              TEXT, TEXT, st.booleans()),
    st.builds(lambda t: ("bad", '{"id": "x", "text": "' + t), LETTER),
    st.just(("latin1", '{"id": "x", "text": "caf\udce9"}')),
    st.sampled_from([("not object", "[1, 2]"), ("not object", "7"), ("blank", ""),
                     ("blank", "   ")]),
    st.builds(lambda n: ("long", json.dumps({"id": "long", "text": "w" * n})),
              st.sampled_from([BOUND - 40, BOUND - 29, BOUND - 28, BOUND + 5, 3 * BOUND])),
    st.builds(lambda d: ("deep", '{"id": "d", "text": "t", "x": ' + "[" * d + "]" * d + "}"),
              st.sampled_from([3, 99, 100, 101, 500])),
)


def _json_expected(kind: str, raw: bytes, lineno: int) -> Expected | None:
    """The reference outcome of one JSONL line (None: not a record, not counted)."""
    if len(raw) > BOUND:
        return Expected(reason="line too long: ")
    if lineno == 1:  # a byte-order mark opening the file is not part of the line
        raw = raw.removeprefix(codecs.BOM_UTF8)
    if not raw.strip():
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return Expected(reason="undecodable bytes (not UTF-8)")
    try:
        obj = json.loads(text)
    except ValueError:
        return Expected(reason="malformed JSON: ")
    if not isinstance(obj, dict):
        return Expected(reason="JSON line is not an object")
    return Expected(record=obj)  # deep records: the pipeline's isolation rule, not the reader


@SETTINGS
@given(lines=st.lists(JSON_LINE, max_size=25), eol=st.sampled_from(["\n", "\r\n"]),
       bom=st.booleans(), last_eol=st.booleans(), gzipped=st.booleans(),
       cut=st.none() | st.floats(0.05, 0.95), ranges=st.lists(st.integers(1, 10**6),
                                                              max_size=4))
def test_jsonl_lines_are_each_read_once(tmp_path: Path, lines: list[tuple[str, str]],
                                        eol: str, bom: bool, last_eol: bool, gzipped: bool,
                                        cut: float | None, ranges: list[int]) -> None:
    """Whole, or (uncompressed) in byte ranges as a large file is split."""
    raws = [t.encode("utf-8", "surrogateescape") + eol.encode() for _, t in lines]
    if raws and not last_eol:
        raws[-1] = raws[-1][:-len(eol)]
    data = (codecs.BOM_UTF8 if bom else b"") + b"".join(raws)
    path = tmp_path / ("a.jsonl.gz" if gzipped else "a.jsonl")
    readable = _write(path, data, gzipped, cut if gzipped else None)
    expected = []
    for n, ((kind, _), raw) in enumerate(zip(lines, raws), start=1):
        want = _json_expected(kind, (codecs.BOM_UTF8 if bom and n == 1 else b"") + raw, n)
        if want is not None:
            expected.append((n, want))
    truncated = gzipped and cut is not None
    complete = sum(1 for p, _ in expected if p <= readable.count(b"\n"))
    if gzipped:
        _compare(_read(path, "jsonl.gz", None), expected, truncated, complete)
    else:
        for numbered in (False, True):
            _compare(_read(path, "jsonl", ranges, numbered), expected, truncated, complete)


# ---- CSV ----------------------------------------------------------------------------

HEADER = ["id", "text", "label"]
LABEL = st.sampled_from(["billing", "returns"])
CSV_ROW = st.one_of(
    st.tuples(st.just("good"), TEXT, LABEL, st.booleans()),
    st.tuples(st.just("unclosed"), st.text(st.sampled_from("ab ,"), max_size=20), LABEL,
              st.just(False)),
    st.tuples(st.just("latin1"), TEXT, LABEL, st.booleans()),
    st.tuples(st.just("fields"), TEXT, LABEL, st.booleans()),
    st.tuples(st.just("long"), st.sampled_from([20_000, BOUND + 10, 3 * BOUND]), LABEL,
              st.booleans()),
    st.tuples(st.just("blank"), st.just(""), LABEL, st.just(False)),
    st.tuples(st.just("broken"), st.text(st.sampled_from("ab ,"), max_size=20), LABEL,
              st.just(False)),
    # an unquoted line of about the bound's length: its "\r\n" cut by the bound or not
    st.tuples(st.just("edge"), st.sampled_from([BOUND - 1, BOUND, BOUND + 1]), LABEL,
              st.just(False)),
    # a quote inside an unquoted field (27" screen) is a character, short or over-long
    st.tuples(st.just("stray"), st.sampled_from([10, BOUND + 10]), LABEL, st.just(False)),
    # a quoted field over the bound whose last line, alone, would be a row
    st.tuples(st.just("rowlike"), st.sampled_from([BOUND + 10]), LABEL, st.booleans()),
)
_LINE_END = re.compile(r"\r\n|\r|\n")


def _csv_line(fields: list[str], eol: str, quote_all: bool) -> str:
    buf = io.StringIO(newline="")  # "\r\n": the writer quotes fields holding either
    csv.writer(buf, lineterminator="\r\n",
               quoting=csv.QUOTE_ALL if quote_all else csv.QUOTE_MINIMAL).writerow(fields)
    return buf.getvalue()[:-2] + eol


def _csv_row(n: int, row: tuple[str, Any, str, bool], eol: str,
             line: int) -> tuple[bytes, Expected | list[Expected] | None]:
    """Row ``n``'s bytes, starting on line ``line``, and its reference outcome."""
    kind, body, label, quote_all = row
    doc_id = f"r{n}"
    if kind == "blank":
        return eol.encode(), None
    if kind == "unclosed":  # opens a quote it never closes, on one line
        return f'{doc_id},"t{body},{label}{eol}'.encode(), Expected(
            reason=f"malformed CSV row: line {line}: ")
    if kind == "broken":  # a quoted field over 3 lines, closed, then other characters
        lines = [f'{doc_id},"t{body}', "victim-doc,an invented text,billing",
                 f'last" oops,{label}']
        return eol.join([*lines, ""]).encode(), [
            Expected(reason=f"malformed CSV row: line {line + i}: in a quoted field of "
                            f"lines {line}-{line + 2} ") for i in range(3)]
    if kind in ("edge", "stray"):
        filler = "x" * (body - len(f"{doc_id},,{label}")) if kind == "edge" else (
            '27" screen ' + "x" * body)
        text = f"{doc_id},{filler},{label}{eol}"
        if len(text) > BOUND:
            return text.encode(), Expected(reason="line too long: ")
        return text.encode(), Expected(record={"id": doc_id, "text": filler, "label": label})
    if kind == "fields":
        return _csv_line([doc_id, body], eol, quote_all).encode(), Expected(
            reason="malformed CSV row: expected 3 fields, got 2")
    if kind == "long":  # a quoted field holding lines shaped like rows
        body = "x" * (body // 2) + ROW_SHAPED + "y" * (body // 2)
    if kind == "rowlike":  # its last line, `fake-1,inside text",label`, has a row's width
        body = "x" * body + "\nfake-1,inside text"
    text = _csv_line([doc_id, body, label], eol, quote_all)
    if kind == "latin1":
        raw = text.encode().replace(doc_id.encode(), doc_id.encode() + b"\xe9", 1)
        return raw, Expected(reason="undecodable bytes (not UTF-8)")
    if len(text) > BOUND:
        return text.encode(), Expected(reason="line too long: ")
    [parsed] = list(csv.reader(io.StringIO(text, newline=""), strict=True))  # reference
    return text.encode(), Expected(record=dict(zip(HEADER, parsed)))


def _unclosed_then_quoted(rows: list[tuple[str, Any, str, bool]]) -> list[Any]:
    """An unclosed quote is followed by a row whose fields are all quoted (or the end),
    so the parse meets a quote that cannot close it before anything else: which rows
    an unclosed quote may join is otherwise a guess no parser can make."""
    out: list[Any] = []
    for i, row in enumerate(rows):
        out.append(row)
        follow = rows[i + 1] if i + 1 < len(rows) else None
        if row[0] == "unclosed" and follow is not None and follow[:1] + follow[3:] != (
                "good", True):
            out.append(("good", "a quoted row", "billing", True))
    return out


@SETTINGS
@given(rows=st.lists(CSV_ROW, max_size=20), eol=st.sampled_from(["\n", "\r\n"]),
       bom=st.booleans(), gzipped=st.booleans(), cut=st.none() | st.floats(0.05, 0.95))
def test_csv_rows_are_each_read_once(tmp_path: Path, rows: list[tuple[str, Any, str, bool]],
                                     eol: str, bom: bool, gzipped: bool,
                                     cut: float | None) -> None:
    rows = _unclosed_then_quoted(rows)
    data = (("\ufeff" if bom else "") + ",".join(HEADER) + eol).encode()
    expected: list[tuple[int, Expected]] = []
    ends: list[int] = []  # where each row's bytes end
    line = 2
    for n, row in enumerate(rows, start=1):
        raw, want = _csv_row(n, row, eol, line)
        data += raw
        line += len(_LINE_END.findall(raw.decode("utf-8", "surrogateescape")))
        for one in [] if want is None else want if isinstance(want, list) else [want]:
            expected.append((len(expected) + 1, one))
            ends.append(len(data))
    path = tmp_path / ("a.csv.gz" if gzipped else "a.csv")
    readable = _write(path, data, gzipped, cut if gzipped else None)
    complete = sum(1 for end in ends if end <= len(readable))
    _compare(_read(path, "csv.gz" if gzipped else "csv"), expected,
             gzipped and cut is not None, complete)
