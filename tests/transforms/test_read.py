"""ReadTranches in a pipeline: all formats, dead letters, read counts, chunk boundaries."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import os
from pathlib import Path
from typing import Any

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.util import assert_that, equal_to

import transforms.read as read_module
from landing import format_jsonl
from landing.chunks import plan_chunks
from landing.formats import read_chunk
from landing.tranches import plan_tranches
from tests.data import day_folder, json_line, numbered_jsonl
from transforms.read import ReadTranches
from transforms.records import (
    DEAD_LETTERS,
    DOC_ID,
    LABEL,
    METADATA,
    POSITION,
    SOURCE,
    STATS,
    DocBatch,
    FieldNames,
)

DAY1, DAY2 = dt.date(2026, 1, 1), dt.date(2026, 1, 2)


def _doc(i: str, label: str = "billing", channel: str = "email") -> dict[str, str]:
    return {"id": i, "text": f"text of {i}", "label": label, "channel": channel}


def _records(batches: beam.PCollection) -> beam.PCollection:
    return batches | "records" >> beam.FlatMap(lambda b: [
        (b.tranche, os.path.basename(source), pos, doc_id, label, meta)
        for source, pos, doc_id, label, meta in zip(b.frame[SOURCE], b.frame[POSITION],
                                                    b.frame[DOC_ID], b.frame[LABEL],
                                                    b.frame[METADATA])
    ])


def _dead_keys(dead: beam.PCollection) -> beam.PCollection:
    return dead | "dead keys" >> beam.Map(
        lambda d: (d["tranche"], os.path.basename(d["source_file"]), d["position"], d["stage"]))


@pytest.fixture
def landing(tmp_path: Path) -> dict[str, Any]:
    """Two tranches with every format and every kind of bad input; returns expectations."""
    good: list[tuple[str, str, int, dict[str, str]]] = []   # (tranche, file, position, doc)
    bad: list[tuple[str, str, int, str]] = []               # (tranche, file, position, reason)
    d1, d2 = day_folder(tmp_path, DAY1), day_folder(tmp_path, DAY2)
    t1, t2 = DAY1.isoformat(), DAY2.isoformat()

    lines: list[tuple[bytes, Any]] = [
        (json_line(_doc("j1")), _doc("j1")),
        (b"", None),                                            # blank line
        (json_line(_doc("j2", "shipping", "chat")), _doc("j2", "shipping", "chat")),
        (b'{"id": "bad-json", "text": "unterminated', "malformed JSON"),
        (b'["not", "an", "object"]', "not an object"),
        (b'"a JSON string"', "not an object"),
        (b'{"id": "bad-bytes", "text": "caf\xe9 \xff"}', "undecodable"),
        (b"   \t", None),                                       # whitespace-only line
        (b"\x0c", "malformed JSON"),  # a form feed: whitespace to Python, not to JSON
        (b" \x0b ", "malformed JSON"),  # a vertical tab, likewise
        (json_line(_doc("j3")), _doc("j3")),
    ]
    # No newline after the last line: it is still a record.
    (d1 / "a.jsonl").write_bytes(b"\n".join(raw for raw, _ in lines))
    for n, (_, what) in enumerate(lines, start=1):
        if isinstance(what, dict):
            good.append((t1, "a.jsonl", n, what))
        elif isinstance(what, str):
            bad.append((t1, "a.jsonl", n, what))

    gz_lines = [json_line(_doc("g1")), b"{oops", json_line(_doc("g2", "returns"))]
    (d1 / "b.jsonl.gz").write_bytes(gzip.compress(b"\n".join(gz_lines) + b"\n"))
    good += [(t1, "b.jsonl.gz", 1, _doc("g1")), (t1, "b.jsonl.gz", 3, _doc("g2", "returns"))]
    bad.append((t1, "b.jsonl.gz", 2, "malformed JSON"))

    pq_docs = [_doc("p1"), _doc("p2", "account", "phone"), _doc("p3")]
    pq.write_table(pa.Table.from_pylist(pq_docs), d1 / "c.parquet")
    good += [(t1, "c.parquet", i, d) for i, d in enumerate(pq_docs, start=1)]

    csv_bytes = (b"id,text,label,channel\n"
                 b"c1,first row,billing,email\n"
                 b"bad-fields,only two\n"
                 b'bad-bytes,"caf\xe9",billing,email\n'
                 b"\n"
                 b'c2,"second, with a comma",technical,chat\n'
                 b"c3,third row,billing,email\n")
    (d1 / "d.csv").write_bytes(csv_bytes)
    good += [(t1, "d.csv", 1, {"id": "c1", "label": "billing", "channel": "email"}),
             (t1, "d.csv", 4, {"id": "c2", "label": "technical", "channel": "chat"}),
             (t1, "d.csv", 5, {"id": "c3", "label": "billing", "channel": "email"})]
    bad += [(t1, "d.csv", 2, "expected 4 fields, got 2"), (t1, "d.csv", 3, "undecodable")]
    (d1 / "notes.txt").write_text("not an input")

    (d2 / "broken.parquet").write_bytes(b"PAR1 this is not a parquet file PAR1")
    bad.append((t2, "broken.parquet", 0, "unreadable parquet file"))
    (d2 / "ok.jsonl").write_bytes(json_line(_doc("k1")) + b"\n" + json_line(_doc("k2")) + b"\n")
    good += [(t2, "ok.jsonl", 1, _doc("k1")), (t2, "ok.jsonl", 2, _doc("k2"))]

    read = {t1: 0, t2: 0}
    for tranche, *_ in good + bad:
        read[tranche] += 1
    return {"root": str(tmp_path), "good": good, "bad": bad, "read": read}


def test_read_tranches_all_formats_dead_letters_and_stats(pipeline: Any,
                                                          landing: dict[str, Any]) -> None:
    plans = plan_tranches(landing["root"], [DAY1, DAY2])
    chunks = plan_chunks(plans, 1 << 20)
    fields = FieldNames(metadata=["channel"])
    expected_records = [
        (t, f, pos, d["id"], d["label"], json.dumps({"channel": d["channel"]}))
        for t, f, pos, d in landing["good"]
    ]
    expected_dead = [(t, f, pos, "read") for t, f, pos, _ in landing["bad"]]
    reasons = {(f, pos): reason for _, f, pos, reason in landing["bad"]}

    def check_reasons(dead: list[dict[str, Any]]) -> None:
        for d in dead:
            want = reasons[(os.path.basename(d["source_file"]), d["position"])]
            assert want in d["reason"], (want, d["reason"])
            assert d["source_file"].startswith(landing["root"])

    def check_batches(batches: list[DocBatch]) -> None:
        keys = [b.batch_key for b in batches]
        assert len(keys) == len(set(keys)), "batch keys must be unique"
        assert all(0 < len(b) <= 2 for b in batches), [len(b) for b in batches]

    with pipeline as p:
        out = p | ReadTranches(chunks, fields, batch_size=2, payload_limit=500)
        assert_that(_records(out.batches), equal_to(expected_records), label="records")
        assert_that(out.batches, check_batches, label="batch sizes")
        assert_that(_dead_keys(out[DEAD_LETTERS]), equal_to(expected_dead), label="dead keys")
        assert_that(out[DEAD_LETTERS], check_reasons, label="dead reasons")
        read = (out[STATS] | beam.Map(lambda kv: (kv[0], kv[1]["read"]))
                | beam.CombinePerKey(sum))
        assert_that(read, equal_to(list(landing["read"].items())), label="read counts")


def test_chunked_jsonl_in_a_pipeline_boundaries_mid_line_and_on_newlines(
        pipeline: Any, tmp_path: Path) -> None:
    data, expected = numbered_jsonl(60)
    (day_folder(tmp_path, DAY1) / "a.jsonl").write_bytes(data)
    plans = plan_tranches(str(tmp_path), [DAY1])

    def kinds(size: int) -> set[str]:
        out = set()
        for start in range(size, len(data), size):
            if data[start] == ord("\n"):
                out.add("on newline")
            elif data[start - 1] == ord("\n"):
                out.add("line start")
            else:
                out.add("mid line")
        return out

    size = next(s for s in range(20, 200) if kinds(s) == {"on newline", "line start", "mid line"})
    chunks = plan_chunks(plans, size)
    assert len(chunks) > 5
    with pipeline as p:
        out = p | ReadTranches(chunks, FieldNames(), batch_size=3, payload_limit=100)
        records = out.batches | beam.FlatMap(
            lambda b: zip(b.frame[POSITION].tolist(), b.frame[DOC_ID].tolist()))
        dead = out[DEAD_LETTERS] | beam.Map(lambda d: (d["position"], "DEAD"))
        merged = (records, dead) | beam.Flatten()
        assert_that(merged, equal_to(list(expected.items())))


def test_chunks_are_numbered_once_and_parsed_in_planned_order(
        pipeline: Any, tmp_path: Path, monkeypatch: Any) -> None:
    """No chunk of a run counts the lines before it (each file is read once for all its
    chunks), and the chunks reach the parser in the order of the plan, largest first,
    not file by file: local runners hand them to workers round-robin in that order."""
    folder = day_folder(tmp_path, DAY1)
    for name, n, width in (("a.jsonl", 40, 60), ("b.jsonl", 60, 20), ("c.jsonl", 50, 40)):
        (folder / name).write_bytes(b"".join(
            json_line(_doc(f"{name}-{i}") | {"text": "w" * width}) + b"\n"
            for i in range(n)))
    # a plan that interleaves the files, as balanced_chunks's largest-first order does
    chunks = sorted(plan_chunks(plan_tranches(str(tmp_path), [DAY1]), 700),
                    key=lambda c: (c.index, c.path))
    planned = [(c.path, c.start) for c in chunks]
    assert len(planned) > 6 and planned != sorted(planned)

    def must_not_count(path: str, upto: int) -> int:
        raise AssertionError(f"a chunk counted the lines before it: {path} {upto}")

    parsed: list[tuple[str, int]] = []

    def recording(chunk: Any, *args: Any) -> Any:
        parsed.append((chunk.path, chunk.start))
        return read_chunk(chunk, *args)

    monkeypatch.setattr(format_jsonl, "count_newlines", must_not_count)
    monkeypatch.setattr(read_module, "read_chunk", recording)
    with pipeline as p:
        out = p | ReadTranches(chunks, FieldNames(), batch_size=7, payload_limit=100)
        assert_that(out[DEAD_LETTERS], equal_to([]), label="no dead letters")
        ids = out.batches | beam.FlatMap(lambda b: b.frame[DOC_ID].tolist())
        assert_that(ids | beam.combiners.Count.Globally(), equal_to([150]), label="all")
    assert parsed == planned


def test_corrupt_parquet_alone_is_one_dead_letter(pipeline: Any, tmp_path: Path) -> None:
    (day_folder(tmp_path, DAY1) / "x.parquet").write_bytes(b"\x00" * 64)
    chunks = plan_chunks(plan_tranches(str(tmp_path), [DAY1]), 1 << 20)
    with pipeline as p:
        out = p | ReadTranches(chunks, FieldNames(), batch_size=10, payload_limit=100)
        assert_that(out.batches, equal_to([]), label="no batches")
        assert_that(out[DEAD_LETTERS] | beam.Map(lambda d: (d["stage"], d["tranche"])),
                    equal_to([("read", "2026-01-01")]), label="one dead letter")
        assert_that(out[STATS] | beam.Map(lambda kv: kv[1]["read"]), equal_to([1]),
                    label="counted as read")

