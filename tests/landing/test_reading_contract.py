"""The reading contract on hostile files: an unclosed quote costs one line, a long
quoted field is one record, an over-long line is one rejection read in bounded memory."""

from __future__ import annotations

import gzip
import json
import os
import tracemalloc
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from landing.formats import Rejection, number_chunks, read_chunk
from landing.reading import Chunk, Planned


def _items(path: Path, fmt: str, **kw: Any) -> list[tuple[Any, int]]:
    return list(read_chunk(Chunk("2026-01-01", str(path), fmt), **kw))


def _csv_rows(n: int) -> list[bytes]:
    return [f'd{i:03d},"text, of {i}",billing\n'.encode() for i in range(1, n + 1)]


def test_an_unclosed_quote_costs_only_its_line(tmp_path: Path) -> None:
    rows = _csv_rows(251)
    rows[100] = b'd101,"never closed,billing\n'
    path = tmp_path / "a.csv"
    path.write_bytes(b"id,text,label\n" + b"".join(rows))
    items = _items(path, "csv")
    assert len(items) == 251  # read counts every row
    dead = [(pos, i.reason) for i, pos in items if isinstance(i, Rejection)]
    assert len(dead) == 1 and dead[0][0] == 101 and "line 102" in dead[0][1]
    assert [i["id"] for i, _ in items if isinstance(i, dict)] == [
        f"d{k:03d}" for k in range(1, 252) if k != 101]


def test_an_unclosed_quote_before_quoted_rows_costs_only_its_line(tmp_path: Path) -> None:
    rows = _csv_rows(20)
    rows[4] = b'd005,"unclosed text\n'
    path = tmp_path / "a.csv"
    path.write_bytes(b"id,text,label\n" + b"".join(rows))
    ids = [i["id"] if isinstance(i, dict) else "DEAD" for i, _ in _items(path, "csv")]
    assert ids == [f"d{k:03d}" if k != 5 else "DEAD" for k in range(1, 21)]


def test_a_quoted_field_broken_after_it_closes_is_a_rejection_for_each_of_its_lines(
        tmp_path: Path) -> None:
    rows = _csv_rows(6)
    rows[2] = b'd003,"hello\nvictim-doc,an invented text,billing\nlast" oops,billing\n'
    rows[4] = b'd005,"hi\nvictim-doc,an invented text,billing\nbye" oops\n'
    path = tmp_path / "a.csv"
    path.write_bytes(b"id,text,label\n" + b"".join(rows) + b"victim-doc,the real one,returns\n")
    items = _items(path, "csv")
    assert len(items) == 11  # read counts every line of the broken fields
    dead = [(pos, i.reason.split(": in a quoted")[0], i.payload) for i, pos in items
            if isinstance(i, Rejection)]
    assert [(pos, reason) for pos, reason, _ in dead] == [
        (3, "malformed CSV row: line 4"), (4, "malformed CSV row: line 5"),
        (5, "malformed CSV row: line 6"), (7, "malformed CSV row: line 8"),
        (8, "malformed CSV row: line 9"), (9, "malformed CSV row: line 10")]
    assert "".join(p for _, _, p in dead[:3]) == rows[2].decode()  # every line kept
    assert [(i["id"], i["text"]) for i, _ in items if isinstance(i, dict)] == [
        ("d001", "text, of 1"), ("d002", "text, of 2"), ("d004", "text, of 4"),
        ("d006", "text, of 6"), ("victim-doc", "the real one")]


def test_an_unclosed_quote_before_a_stray_quote_in_a_later_row_costs_only_its_line(
        tmp_path: Path) -> None:
    rows = [f"d{i:03d},text {i},billing\n".encode() for i in range(1, 61)]
    rows[0] = b'd001,"never closed,billing\n'
    rows[49] = b'd050,a 27" screen,billing\n'  # a quote inside an unquoted field
    path = tmp_path / "a.csv"
    path.write_bytes(b"id,text,label\n" + b"".join(rows))
    items = _items(path, "csv")
    assert [pos for i, pos in items if isinstance(i, Rejection)] == [1]
    assert [i["id"] for i, _ in items if isinstance(i, dict)] == [
        f"d{k:03d}" for k in range(2, 61)]
    assert {i["text"] for i, _ in items if isinstance(i, dict) and i["id"] == "d050"} == {
        'a 27" screen'}


def test_a_long_quoted_field_with_row_shaped_lines_is_one_record(tmp_path: Path) -> None:
    inner = "\n".join(["victim-doc,an invented text,billing"] * 3)
    text = "x" * 140_000 + "\n" + inner + "\n" + "y" * 100
    path = tmp_path / "a.csv"
    path.write_bytes(b"id,text,label\nreal-1,hello,billing\nlong-doc,\"" + text.encode()
                     + b"\",billing\nvictim-doc,the real one,returns\n")
    items = _items(path, "csv")
    assert [(i["id"], len(i["text"]), pos) for i, pos in items if isinstance(i, dict)] == [
        ("real-1", 5, 1), ("long-doc", len(text), 2), ("victim-doc", 12, 3)]
    assert len(items) == 3


def test_a_quoted_field_longer_than_the_bound_is_one_rejection(tmp_path: Path) -> None:
    inner = "\n".join(["victim-doc,an invented text,billing"] * 3)
    path = tmp_path / "a.csv"
    path.write_bytes(b"id,text,label\nbig,\"" + (("z" * 30000 + "\n" + inner + "\n") * 3
                     ).encode() + b"\",billing\nok,fine,returns\n")
    items = _items(path, "csv", max_text_chars=1000)
    assert [i["id"] if isinstance(i, dict) else "DEAD" for i, _ in items] == ["DEAD", "ok"]
    reason = items[0][0].reason
    assert reason.startswith(f"line too long: {path} lines 2-14: ")


def test_a_jsonl_file_without_newline_is_one_rejection_in_bounded_memory(
        tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    with path.open("wb") as fh:
        fh.write(b'{"id": "ok", "text": "fine"}\n{"id": "huge", "text": "')
        for _ in range(40):
            fh.write(b"a" * (1 << 20))
    tracemalloc.start()
    items = _items(path, "jsonl")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert [(type(i).__name__, pos) for i, pos in items] == [("dict", 1), ("Rejection", 2)]
    assert items[1][0].reason.startswith(f"line too long: {path} line 2: ")
    assert peak < 16 << 20, peak


def test_a_gzip_bomb_on_one_line_is_one_rejection_in_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl.gz"
    with gzip.open(path, "wb") as fh:
        fh.write(b'{"id": "bomb", "text": "')
        for _ in range(200):
            fh.write(b"\0" * (1 << 20))
        fh.write(b'"}\n{"id": "after", "text": "fine"}\n')
    tracemalloc.start()
    items = _items(path, "jsonl.gz")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert [(type(i).__name__, pos) for i, pos in items] == [("Rejection", 1), ("dict", 2)]
    assert peak < 16 << 20, peak


def test_an_over_long_line_spanning_chunks_is_read_once(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_bytes(b'{"id": "a"}\n' + b"q" * 5000 + b'\n{"id": "b"}\n')
    got = []
    for i, (start, end) in enumerate([(0, 1000), (1000, 2000), (2000, 6000)]):
        chunk = Chunk("t", str(path), "jsonl", start, end, i)
        got += [(type(x).__name__, p) for x, p in read_chunk(chunk, max_text_chars=100)]
    assert got == [("dict", 1), ("Rejection", 2), ("dict", 3)]


def test_row_estimates_are_within_20_percent(tmp_path: Path) -> None:
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    from landing.formats import resolve
    from landing.samples import make_docs, write_tranche

    docs = list(make_docs(30_000, seed=3, min_chars=20, max_chars=2000))
    for fmt in ("jsonl", "jsonl.gz", "csv"):
        path = write_tranche(str(tmp_path), "2026-01-01", docs, fmt, name=f"p-{fmt}")
        f, gz = resolve(fmt)
        est = f.estimate(path, Path(path).stat().st_size, gz).rows
        assert abs(est - len(docs)) <= 0.2 * len(docs), (fmt, est)
    parquet = tmp_path / "a.parquet"
    pq.write_table(pa.Table.from_pylist([{"j": json.dumps(d)} for d in docs]), parquet)
    f, gz = resolve("parquet")
    assert f.estimate(str(parquet), parquet.stat().st_size, gz).rows == len(docs)


def test_an_unclosed_quote_before_an_over_long_line_costs_only_its_line(
        tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_bytes(b"id,text,label\nd1,fine,billing\nd2,\"never closed,billing\nd3,"
                     + b"z" * 100_000 + b",billing\nd4,also fine,returns\n")
    items = _items(path, "csv", max_text_chars=1000)
    assert [(i["id"] if isinstance(i, dict) else i.reason[:30], pos) for i, pos in items] == [
        ("d1", 1), ("malformed CSV row: line 3: a q", 2),
        (f"line too long: {path}"[:30], 3), ("d4", 4)]


def test_a_record_too_deep_for_json_is_malformed_and_the_next_line_is_read(
        tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    deep = '{"id": "deep", "text": "t", "x": ' + "[" * 100_000 + "]" * 100_000 + "}\n"
    path.write_text(deep + '{"id": "ok", "text": "t", "x": [[1]]}\n')
    items = _items(path, "jsonl")
    assert isinstance(items[0][0], Rejection) and items[0][1] == 1
    assert items[0][0].reason.startswith("malformed JSON")
    assert items[1] == ({"id": "ok", "text": "t", "x": [[1]]}, 2)


def test_a_byte_order_mark_is_not_part_of_the_first_jsonl_line(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"id": "a", "text": "t"}\n')
    assert _items(path, "jsonl") == [({"id": "a", "text": "t"}, 1)]


def test_a_parquet_row_whose_string_is_not_utf8_is_a_rejection_of_its_own(
        tmp_path: Path) -> None:
    """The rows around it are read; the rejection names the column and keeps the bytes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts = [f"text {i}".encode() if i != 6 else b"bad \xff" for i in range(20)]
    path = tmp_path / "a.parquet"
    pq.write_table(pa.table({"id": [f"p{i}" for i in range(20)],
                             "text": pa.array(texts, pa.binary()).view(pa.string())}), path)
    items = _items(path, "parquet")
    assert [pos for _, pos in items] == list(range(1, 21))
    [(bad, pos)] = [(i, pos) for i, pos in items if isinstance(i, Rejection)]
    assert pos == 7 and bad.reason == "undecodable bytes (not UTF-8) in column 'text'"
    assert bad.payload == {"id": "p6", "text": b"bad \xff"}


def test_the_chunks_of_a_corrupt_row_group_are_one_rejection_each_at_their_own_place(
        tmp_path: Path) -> None:
    """A row group cut into three row ranges whose pages cannot be decoded: each range
    is one rejection, the first at position 0 (the file), the others at their first row,
    so that no two share the dead-letter key (file, position, stage)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "a.parquet"
    pq.write_table(pa.table({"id": [f"p{i}" for i in range(3000)],
                             "text": [f"text {i}" for i in range(3000)]}), path,
                   compression="none", row_group_size=3000)
    data = bytearray(path.read_bytes())
    data[4:60] = b"\xff" * 56  # the first column chunk's page header
    path.write_bytes(bytes(data))
    found = []
    for start in (0, 1000, 2000):
        chunk = Chunk("2026-01-01", str(path), "parquet", start=start, end=start + 1000,
                      index=start // 1000)
        [(item, position)] = read_chunk(chunk)
        assert isinstance(item, Rejection) and item.reason.startswith(
            f"unreadable parquet file: {path}")
        found.append((position, item.reason.split(":")[1].strip()))
    assert [p for p, _ in found] == [0, 1001, 2001]
    assert [w for _, w in found] == [str(path), f"{path} from row 1001",
                                     f"{path} from row 2001"]


def test_a_later_jsonl_chunk_that_cannot_be_read_is_rejected_from_its_first_line(
        tmp_path: Path) -> None:
    path = tmp_path / "gone.jsonl"  # numbered at planning, gone since
    chunk = Chunk("2026-01-01", str(path), "jsonl", start=500, end=1000, index=1,
                  lines_before=10)
    [(item, position)] = read_chunk(chunk)
    assert isinstance(item, Rejection) and position == 11
    assert item.reason.startswith(f"unreadable jsonl file: {path} from line 11: ")


def _outline(items: list[tuple[Any, int]]) -> list[tuple[str, int]]:
    return [(i["id"] if isinstance(i, dict) else i.reason[:40], pos) for i, pos in items]


def test_an_unclosed_quote_closed_by_a_stray_quote_far_below_costs_only_its_line(
        tmp_path: Path) -> None:
    """A quote never closed, then 2,000 rows (more than the bound), then a row holding a
    stray quote (``a 12" ruler``): the quoted field csv would read runs to that stray
    quote and is over the bound, but the line it closes on is a row of its own, so the
    quote that opened it was the unclosed one: its line only is lost."""
    rows = [b"r%d,printer screen keyboard cable mouse install update" % i
            for i in range(2000)]
    path = tmp_path / "a.csv"
    path.write_bytes(b"\n".join([b"id,text", b"1,printer", b'2,"unclosed printer', *rows,
                                 b'ruler,a 12" ruler', b"last,printer"]) + b"\n")
    items = _items(path, "csv", max_text_chars=10)  # a bound of 65,656 bytes
    assert _outline(items)[:3] == [("1", 1), ("malformed CSV row: line 3: a quote that ", 2),
                                   ("r0", 3)]
    assert [i["id"] for i, _ in items[2:]] == [f"r{i}" for i in range(2000)] + [
        "ruler", "last"]
    assert items[-2][0]["text"] == 'a 12" ruler' and items[-1][1] == 2004


def test_a_stray_quote_in_an_over_long_unquoted_line_costs_only_that_line(
        tmp_path: Path) -> None:
    """``27" screen`` in an unquoted field is a character (as csv reads it), not a quote
    that runs on to the next quote of the file: the over-long line is one dead letter,
    the rows after it (one with another stray quote) are read."""
    path = tmp_path / "a.csv"
    path.write_bytes(b'id,text\n1,printer\n2,27" screen ' + b"x" * 70_000
                     + b'\n3,printer\n4,printer\n5,a 12" ruler\n6,printer\n')
    items = _items(path, "csv", max_text_chars=10)
    assert _outline(items) == [("1", 1), (f"line too long: {path} line 3"[:40], 2),
                               ("3", 3), ("4", 4), ("5", 5), ("6", 6)]


def test_a_crlf_line_cut_by_the_bound_keeps_every_line_number(tmp_path: Path) -> None:
    """A line exactly as long as the bound before its ``\\r\\n`` (the bound cuts between
    the two): every later line keeps its number, and an unclosed quote after it costs
    its own line only."""
    from landing.reading import line_bound

    bound = line_bound(10)
    path = tmp_path / "a.csv"
    path.write_bytes(b"id,text\r\n1,printer\r\n2," + b"x" * (bound - 2) + b"\r\n3,printer\r\n"
                     b'4,"unclosed\r\n5,printer\r\n6,' + b"z" * 70_000 + b"\r\n7,printer\r\n")
    items = _items(path, "csv", max_text_chars=10)
    assert _outline(items) == [
        ("1", 1), (f"line too long: {path} line 3"[:40], 2), ("3", 3),
        ("malformed CSV row: line 5: a quote that ", 4), ("5", 5),
        (f"line too long: {path} line 7"[:40], 6), ("7", 7)]


def test_a_column_named_twice_makes_the_file_one_dead_letter_naming_it(
        tmp_path: Path) -> None:
    """A CSV header or a Parquet schema naming ``text`` twice: which value is the text
    is unknown, so no record of the file is read; the file is one dead letter that
    names the column and both places."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    csv_path = tmp_path / "a.csv"
    csv_path.write_text("id,text,text\nc1,printer screen,\nc2,keyboard,\n")
    parquet = tmp_path / "b.parquet"
    pq.write_table(pa.Table.from_arrays(
        [pa.array(["p1"]), pa.array(["printer"]), pa.array([None], pa.string())],
        names=["id", "text", "text"]), parquet)
    for path, fmt, kind in ((csv_path, "csv", "CSV header"),
                            (parquet, "parquet", "Parquet schema")):
        [(item, position)] = _items(path, fmt)
        assert isinstance(item, Rejection) and position == 0
        assert item.reason == (f"unreadable {fmt} file: {path}: ValueError: the {kind} names "
                               "column 'text' twice (columns 2 and 3): which one holds the "
                               "value is unknown")


def test_a_long_quoted_field_whose_last_line_reads_like_a_row_is_one_field(
        tmp_path: Path) -> None:
    """A field over the bound that closes as the quoting rules say (the closing quote
    followed by the line's end) is one dead letter, as csv reads one field, however
    row-like its last line (``signed, the customer"``): no record is made of its lines."""
    import csv as csv_module

    path = tmp_path / "a.csv"
    with open(path, "w", newline="") as fh:
        writer = csv_module.writer(fh)
        writer.writerows([["id", "text"], ["a-1", "first"],
                          ["a-2", "Quoted log follows:\n" + "filler line\n" * 6000
                           + "fake-1,this line is inside the quoted text\nsigned, the customer"],
                          ["a-3", "last"]])
    items = _items(path, "csv", max_text_chars=10)
    assert _outline(items) == [("a-1", 1), (f"line too long: {path} lines 3-6004"[:40], 2),
                               ("a-3", 3)]


def test_a_parquet_file_rejected_whole_stands_for_all_its_rows_in_every_row_range(
        tmp_path: Path) -> None:
    """A Parquet file of 8 row groups that names a column twice (or lacks one), read in 1,
    2 or 4 row ranges: each range is one rejection, and the rejections with the rows
    they stand for (``unread``) add up to the file's 8,000 rows, however it was cut."""
    import datetime as dt

    import pyarrow as pa
    import pyarrow.parquet as pq

    from landing.chunks import balanced_chunks
    from landing.formats import number_chunks
    from landing.tranches import plan_tranches

    folder = tmp_path / "dt=2026-03-01"
    folder.mkdir()
    n = 8000
    pq.write_table(pa.Table.from_arrays(
        [pa.array([f"b{i}" for i in range(n)]), pa.array(["t"] * n), pa.array(["u"] * n)],
        names=["id", "text", "text"]), folder / "dup.parquet", row_group_size=1000)
    plans = plan_tranches(str(tmp_path), [dt.date(2026, 3, 1)])
    for workers in (1, 2, 4):
        chunks = number_chunks(balanced_chunks(plans, 64 << 20, workers))
        items = [item for c in chunks for item in read_chunk(c, required=("id", "text"))]
        assert all(isinstance(i, Rejection) for i, _ in items), workers
        assert len(items) == len(chunks)
        assert sum(1 + i.unread for i, _ in items) == n, workers
        assert len({p for _, p in items}) == len(items)  # one key each


@pytest.mark.parametrize("kind", ["timestamp", "date", "duration"])
def test_a_parquet_row_with_a_value_beyond_pythons_range_is_a_rejection_of_its_own(
        tmp_path: Path, kind: str) -> None:
    """A timestamp, date or duration Python cannot hold, in any column, rejects its row
    only (naming the column); the rows before and after it are read."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    far = {"timestamp": (pa.timestamp("ms"), 10**15 * 300), "date": (pa.date32(), 10**9),
           "duration": (pa.duration("s"), 10**17)}[kind]
    path = tmp_path / "a.parquet"
    pq.write_table(pa.table({"id": [f"p{i}" for i in range(10)], "text": ["t"] * 10,
                             "created": pa.array([0] * 4 + [far[1]] + [0] * 5, far[0])}),
                   path)
    items = _items(path, "parquet")
    assert [pos for _, pos in items] == list(range(1, 11))
    [(bad, pos)] = [(i, pos) for i, pos in items if isinstance(i, Rejection)]
    assert pos == 5 and bad.reason.startswith("a value out of Python's range (")
    assert bad.reason.endswith("in column 'created'")
    assert bad.payload == {"id": "p4", "text": "t", "created": None}
    assert [i["id"] for i, _ in items if not isinstance(i, Rejection)] == \
        [f"p{i}" for i in range(10) if i != 4]


def test_a_json_record_naming_a_key_twice_is_a_rejection_of_its_own(tmp_path: Path) -> None:
    """At any depth, as a CSV header or Parquet schema naming a column twice: which
    value is the record's is unknown. The lines around it are read."""
    path = tmp_path / "a.jsonl"
    path.write_text('{"id": "a", "text": "first", "text": "second"}\n'
                    '{"id": "b", "text": "t", "meta": {"k": 1, "k": 2}}\n'
                    '{"id": "c", "text": "t", "meta": [{"k": 1}, {"k": 2}]}\n')
    items = _items(path, "jsonl")
    assert [pos for _, pos in items] == [1, 2, 3]
    assert [i.reason for i, _ in items[:2] if isinstance(i, Rejection)] == [
        "JSON object names key 'text' twice: which value holds is unknown",
        "JSON object names key 'k' twice: which value holds is unknown"]
    assert items[2][0] == {"id": "c", "text": "t", "meta": [{"k": 1}, {"k": 2}]}


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lengths=st.lists(st.integers(min_value=1, max_value=3000), min_size=1, max_size=8),
       cuts=st.sets(st.integers(min_value=1, max_value=25_000), max_size=6))
def test_numbered_chunks_read_each_line_once_and_fail_at_lines_of_their_own(
        tmp_path: Path, lengths: list[int], cuts: set[int]) -> None:
    """A file's byte-range chunks, cut anywhere (inside long lines too) and numbered as
    planning numbers them, read every line once, at its line number; when the file
    changes after planning, each chunk's rejection is at a position no other chunk's
    is at (a dead letter's key: none is lost to another's)."""
    path = tmp_path / f"{uuid.uuid4().hex}.jsonl"
    data = b"".join(json.dumps({"id": f"d{i}", "text": "x" * n}).encode() + b"\n"
                    for i, n in enumerate(lengths))
    path.write_bytes(data)
    stat = os.stat(path)
    planned = Planned(stat.st_size, str(stat.st_mtime))
    bounds = sorted({c for c in cuts if c < len(data)} | {0})
    chunks = number_chunks([Chunk("t", str(path), "jsonl", a, b, i, planned=planned)
                            for i, (a, b) in enumerate(zip(bounds, [*bounds[1:], len(data)]))])
    assert [(x["id"], p) for c in chunks for x, p in read_chunk(c)] == [
        (f"d{i}", i + 1) for i in range(len(lengths))]
    os.utime(path, (stat.st_atime, stat.st_mtime + 5))  # changed since it was planned
    failed = [(x, p) for c in chunks for x, p in read_chunk(c)]
    assert all(isinstance(x, Rejection) and x.changed for x, _ in failed)
    positions = [p for _, p in failed]
    assert len(positions) == len(set(positions)), positions
