"""Property-based tests of the record readers (hypothesis): no exception escapes on
arbitrary input, a valid record keeps its id and text unchanged, and Parquet row ranges
over row groups of any sizes read every row once."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from landing.chunks import Chunk
from landing.format_csv import csv_records
from landing.format_jsonl import parse_json_line
from landing.formats import Rejection, read_chunk

# Texts as a landing file can hold them: any Unicode but lone surrogates.
TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=200)


@given(st.binary(max_size=500))
def test_any_bytes_are_a_record_or_a_rejection(line: bytes) -> None:
    out = parse_json_line(line)
    assert isinstance(out, (dict, Rejection))


@given(TEXT, TEXT, st.dictionaries(st.text(max_size=5), TEXT, max_size=3))
def test_a_valid_json_record_keeps_its_id_and_text(doc_id: str, text: str,
                                                   extra: dict[str, str]) -> None:
    record = extra | {"id": doc_id, "text": text}
    out = parse_json_line(json.dumps(record, ensure_ascii=False).encode())
    assert isinstance(out, dict) and out["id"] == doc_id and out["text"] == text


@given(st.text(max_size=500))
def test_any_csv_text_is_rows_or_rejections(text: str) -> None:
    """Or, for a header naming a column twice (``,`` names '' twice), the ValueError that
    makes the whole file one rejection (``read_chunk``)."""
    try:
        for item, position in csv_records(io.StringIO(text, newline="")):
            assert isinstance(item, (dict, Rejection))
            assert position >= (0 if isinstance(item, Rejection) else 1)  # 0: the whole file
    except ValueError as exc:
        assert "names column" in str(exc) and "twice" in str(exc), exc


@given(st.lists(st.tuples(TEXT, TEXT), max_size=10))
def test_valid_csv_rows_keep_their_id_and_text(rows: list[tuple[str, str]]) -> None:
    rows = [(i, t) for i, t in rows if "\x00" not in i + t]
    buf = io.StringIO(newline="")
    writer = csv.writer(buf)
    writer.writerow(["id", "text"])
    writer.writerows(rows)
    got = [item for item, _ in csv_records(io.StringIO(buf.getvalue(), newline=""))]
    assert [(g["id"], g["text"]) for g in got if isinstance(g, dict)] == rows


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=2000))
def test_a_jsonl_file_of_any_bytes_is_read_line_by_line(tmp_path_factory: object,
                                                         data: bytes) -> None:
    path = Path(str(tmp_path_factory.mktemp("p"))) / "a.jsonl"  # type: ignore[attr-defined]
    path.write_bytes(data)
    items = list(read_chunk(Chunk("t", str(path), "jsonl")))
    lines = [line for line in data.split(b"\n") if line.strip()]
    assert len(items) == len(lines)
    assert [p for _, p in items] == sorted(p for _, p in items)


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=2000), st.sampled_from(["csv", "csv.gz"]))
def test_a_csv_file_of_any_bytes_is_rows_or_rejections(tmp_path_factory: object, data: bytes,
                                                       fmt: str) -> None:
    """Any bytes (a BOM, invalid UTF-8, NULs, stray quotes), plain or gzipped: every item
    is a row or a rejection, positions increase, and nothing escapes."""
    import gzip

    path = Path(str(tmp_path_factory.mktemp("c"))) / f"a.{fmt}"  # type: ignore[attr-defined]
    path.write_bytes(gzip.compress(data) if fmt == "csv.gz" else data)
    items = list(read_chunk(Chunk("t", str(path), fmt)))
    assert all(isinstance(item, (dict, Rejection)) for item, _ in items)
    rows = [p for item, p in items if isinstance(item, dict)]
    assert rows == sorted(rows) and all(p >= 1 for p in rows)


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(0, 30), min_size=1, max_size=6),
       cuts=st.lists(st.integers(1, 200), max_size=6), batch=st.integers(1, 50))
def test_parquet_row_ranges_over_any_row_groups_read_each_row_once(
        tmp_path_factory: object, sizes: list[int], cuts: list[int], batch: int) -> None:
    """Row groups of any sizes (empty ones too), ranges cut anywhere: every row once, in
    order, with its 1-based row number, against the whole file read by pyarrow."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(tmp_path_factory.mktemp("pq")) / "a.parquet"  # type: ignore[attr-defined]
    schema = pa.schema([("id", pa.string()), ("text", pa.string())])
    with pq.ParquetWriter(path, schema) as writer:
        at = 0
        for n in sizes:
            writer.write_table(pa.Table.from_pylist(
                [{"id": f"r{i}", "text": f"t{i}"} for i in range(at, at + n)], schema=schema))
            at += n
    reference = [(r, i + 1) for i, r in enumerate(pq.read_table(path).to_pylist())]
    total = len(reference)
    bounds = sorted({c % (total + 1) for c in cuts} - {0, total})
    spans = list(zip([0, *bounds], [*bounds, -1]))
    got = [item for i, (start, end) in enumerate(spans)
           for item in read_chunk(Chunk("t", str(path), "parquet", start, end, i),
                                  batch_size=batch)]
    assert got == reference



_KEYS = st.sampled_from(["id", "text", "label", "k", "\u00e9", 'a"b'])
_PAIRS = st.lists(st.tuples(_KEYS, st.integers(0, 9) | st.text(max_size=5)), max_size=6)


def _object(pairs: list[tuple[str, Any]], tail: str = "") -> str:
    """A JSON object written from its pairs as they are, duplicates kept."""
    items = [f"{json.dumps(k)}: {json.dumps(v)}" for k, v in pairs]
    return "{" + ", ".join(items + ([tail] if tail else [])) + "}"


@given(_PAIRS, _PAIRS)
def test_a_json_object_is_a_record_unless_one_of_its_objects_names_a_key_twice(
        top: list[tuple[str, Any]], nested: list[tuple[str, Any]]) -> None:
    """A rejection exactly when the object, or one nested in a list in it, names a key
    twice; else the record its pairs make."""
    line = _object(top, f'"nested": [{_object(nested)}]')
    out = parse_json_line(line.encode())
    names = [k for k, _ in top] + ["nested"]
    if len(set(names)) < len(names) or len({k for k, _ in nested}) < len(nested):
        assert isinstance(out, Rejection) and "twice" in out.reason
    else:
        assert out == dict(top) | {"nested": [dict(nested)]}
