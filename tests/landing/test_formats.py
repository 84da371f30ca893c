"""Record readers: every line or row once, as a record or a rejection with its reason."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from landing.chunks import Chunk
from landing.format_csv import csv_records
from landing.format_jsonl import parse_json_line
from landing.formats import Rejection, read_chunk


def _items(path: Path, fmt: str) -> list[tuple[Any, int]]:
    return list(read_chunk(Chunk("2026-01-01", str(path), fmt)))


@pytest.mark.parametrize("line, reason", [
    (b'{"id": "x", "text": ', "malformed JSON"),
    (b'["a list"]', "JSON line is not an object"),
    (b'"a string"', "JSON line is not an object"),
    (b'{"id": "caf\xe9"}', "undecodable bytes (not UTF-8)"),
])
def test_json_line_rejections_say_why_and_keep_the_payload(line: bytes, reason: str) -> None:
    got = parse_json_line(line)
    assert isinstance(got, Rejection)
    assert got.reason.startswith(reason)
    assert got.payload in (line, line.decode("utf-8", "replace"))


def test_json_line_record_is_the_object() -> None:
    assert parse_json_line(b'{"id": "a", "text": "t", "n": 1}\n') == {
        "id": "a", "text": "t", "n": 1}


def test_jsonl_positions_are_line_numbers_blank_lines_skipped(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_bytes(b'{"id": "a"}\n\n   \n{oops\n{"id": "b"}')  # no final newline
    items = _items(path, "jsonl")
    assert [(i if isinstance(i, dict) else "DEAD", pos) for i, pos in items] == [
        ({"id": "a"}, 1), ("DEAD", 4), ({"id": "b"}, 5)]


def test_csv_with_byte_order_mark_is_read(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_bytes("\ufeffid,text\nx1,hello there\nx2,general kenobi\n".encode())
    assert [(i["id"], pos) for i, pos in _items(path, "csv")] == [("x1", 1), ("x2", 2)]


def test_csv_rows_wrong_width_and_empty_lines(tmp_path: Path) -> None:
    text = io.StringIO('id,text\na,"one, quoted"\n\nb\nc,three\n', newline="")
    items = list(csv_records(text))
    assert items[0] == ({"id": "a", "text": "one, quoted"}, 1)
    assert isinstance(items[1][0], Rejection) and items[1][1] == 2
    assert "expected 2 fields, got 1" in items[1][0].reason
    assert items[2] == ({"id": "c", "text": "three"}, 3)


def test_header_only_csv_has_no_records() -> None:
    assert list(csv_records(io.StringIO("id,text\n", newline=""))) == []


def test_parquet_rows_are_numbered_from_one(tmp_path: Path) -> None:
    path = tmp_path / "a.parquet"
    pq.write_table(pa.Table.from_pylist([{"id": f"r{i}"} for i in range(5)]), path)
    assert [(i["id"], pos) for i, pos in _items(path, "parquet")] == [
        (f"r{i}", i + 1) for i in range(5)]


def test_truncated_gzip_ends_in_one_rejection_after_the_good_lines(tmp_path: Path) -> None:
    data = gzip.compress(b"".join(json.dumps({"id": f"g{i}"}).encode() + b"\n"
                                  for i in range(2000)))
    path = tmp_path / "a.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])
    items = _items(path, "jsonl.gz")
    *records, (last, position) = items
    assert records and all(isinstance(i, dict) for i, _ in records)
    assert isinstance(last, Rejection) and position == 0
    assert last.reason.startswith(f"unreadable jsonl.gz file: {path} after line {len(records)}")
    assert "EOFError" in last.reason


@pytest.mark.parametrize("name, fmt, data", [
    ("x.parquet", "parquet", b"PAR1 not parquet PAR1"),
    ("x.jsonl.gz", "jsonl.gz", b"not gzip at all"),
    ("x.csv.gz", "csv.gz", b"\x1f\x8b\x08 truncated"),
])
def test_an_unreadable_file_is_one_rejection_at_position_zero_naming_it(
        tmp_path: Path, name: str, fmt: str, data: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    [(item, position)] = _items(path, fmt)
    assert isinstance(item, Rejection) and position == 0
    assert item.reason.startswith(f"unreadable {fmt} file: {path}: ")


def test_a_file_gone_since_planning_is_one_rejection(tmp_path: Path) -> None:
    [(item, position)] = _items(tmp_path / "gone.jsonl", "jsonl")
    assert isinstance(item, Rejection) and position == 0 and "gone.jsonl" in item.reason


def test_gzipped_csv_is_read(tmp_path: Path) -> None:
    path = tmp_path / "a.csv.gz"
    path.write_bytes(gzip.compress(b"id,text\nz1,hello\n"))
    assert [(i["id"], pos) for i, pos in _items(path, "csv.gz")] == [("z1", 1)]


def test_the_unreadable_rest_of_a_file_carries_an_estimate_of_its_records(
        tmp_path: Path) -> None:
    """A truncated gzip file planned at 2,000 records, read to where it breaks: its one
    rejection says about how many records were never read (planning's estimate less
    those read), so the run can count them in its dead-letter share."""
    import dataclasses

    data = gzip.compress(b"".join(json.dumps({"id": f"g{i}"}).encode() + b"\n"
                                  for i in range(2000)))
    path = tmp_path / "a.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])
    chunk = dataclasses.replace(Chunk("t", str(path), "jsonl.gz"), est_rows=2000)
    *records, (last, _) = list(read_chunk(chunk))
    assert isinstance(last, Rejection) and last.unread == 2000 - len(records) - 1 > 0
