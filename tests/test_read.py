"""Finding tranches, cutting chunks and reading the four input formats."""

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

from pipelines.config import FieldsConfig
from transforms.read import (
    DEAD_LETTERS,
    STATS,
    ReadTranches,
    _ReadChunkFn,
    plan_chunks,
    plan_tranches,
)
from transforms.records import DOC_ID, LABEL, METADATA, POSITION, DocBatch

DAY1, DAY2, DAY3 = dt.date(2026, 1, 1), dt.date(2026, 1, 2), dt.date(2026, 1, 3)


def _doc(i: str, label: str = "billing", channel: str = "email") -> dict[str, str]:
    return {"id": i, "text": f"text of {i}", "label": label, "channel": channel}


def _line(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def _folder(root: Path, day: dt.date) -> Path:
    folder = root / f"dt={day.isoformat()}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# ------------------------------------------------------------------ planning
def test_plan_tranches_finds_all_formats_and_ignores_other_files(tmp_path: Path) -> None:
    folder = _folder(tmp_path, DAY1)
    names = {"a.jsonl": "jsonl", "b.jsonl.gz": "jsonl.gz", "c.parquet": "parquet",
             "d.csv": "csv"}
    for name in names:
        (folder / name).write_bytes(b"x" * 10)
    for other in ("README.txt", "_SUCCESS", "e.csv.gz", "f.json"):
        (folder / other).write_bytes(b"y")
    [plan] = plan_tranches(str(tmp_path), [DAY1])
    assert not plan.missing
    assert {os.path.basename(f.path): f.format for f in plan.files} == names
    assert sorted(os.path.basename(p) for p in plan.ignored) == [
        "README.txt", "_SUCCESS", "e.csv.gz", "f.json"]
    assert plan.total_bytes == 40


def test_plan_tranches_reports_missing_folder_and_folder_without_inputs(tmp_path: Path) -> None:
    _folder(tmp_path, DAY1)
    (_folder(tmp_path, DAY1) / "a.jsonl").write_bytes(b"{}\n")
    (_folder(tmp_path, DAY3) / "notes.txt").write_bytes(b"nothing to read")
    plans = {p.tranche: p for p in plan_tranches(str(tmp_path), [DAY1, DAY2, DAY3])}
    assert list(plans) == ["2026-01-01", "2026-01-02", "2026-01-03"]
    assert not plans["2026-01-01"].missing
    for day in ("2026-01-02", "2026-01-03"):
        assert plans[day].missing
        assert plans[day].files == []
        assert f"dt={day}" in plans[day].missing_reason


def test_plan_chunks_cuts_only_large_uncompressed_jsonl_into_contiguous_ranges(
        tmp_path: Path) -> None:
    folder = _folder(tmp_path, DAY1)
    (folder / "big.jsonl").write_bytes(b"z" * 1000)
    (folder / "small.jsonl").write_bytes(b"z" * 100)
    for name in ("big.jsonl.gz", "big.csv", "big.parquet"):
        (folder / name).write_bytes(b"z" * 1000)
    chunks = plan_chunks(plan_tranches(str(tmp_path), [DAY1]), 300)
    by_file: dict[str, list[Any]] = {}
    for c in chunks:
        by_file.setdefault(os.path.basename(c.path), []).append(c)
    big = sorted(by_file.pop("big.jsonl"), key=lambda c: c.start)
    assert [(c.start, c.end) for c in big] == [(0, 300), (300, 600), (600, 900), (900, 1000)]
    assert len({c.key for c in big}) == len(big)
    for name in ("small.jsonl", "big.jsonl.gz", "big.csv", "big.parquet"):
        [whole] = by_file[name]
        assert (whole.start, whole.end) == (0, -1)


# ------------------------------------------------------------------ reading
def _records(batches: beam.PCollection) -> beam.PCollection:
    return batches | "records" >> beam.FlatMap(lambda b: [
        (b.tranche, os.path.basename(b.source_file), pos, doc_id, label, meta)
        for pos, doc_id, label, meta in zip(b.frame[POSITION], b.frame[DOC_ID],
                                            b.frame[LABEL], b.frame[METADATA])
    ])


def _dead_keys(dead: beam.PCollection) -> beam.PCollection:
    return dead | "dead keys" >> beam.Map(
        lambda d: (d["tranche"], os.path.basename(d["source_file"]), d["position"], d["stage"]))


@pytest.fixture
def landing(tmp_path: Path) -> dict[str, Any]:
    """Two tranches with every format and every kind of bad input; returns expectations."""
    good: list[tuple[str, str, int, dict[str, str]]] = []   # (tranche, file, position, doc)
    bad: list[tuple[str, str, int, str]] = []               # (tranche, file, position, reason)
    d1, d2 = _folder(tmp_path, DAY1), _folder(tmp_path, DAY2)
    t1, t2 = DAY1.isoformat(), DAY2.isoformat()

    lines: list[tuple[bytes, Any]] = [
        (_line(_doc("j1")), _doc("j1")),
        (b"", None),                                            # blank line
        (_line(_doc("j2", "shipping", "chat")), _doc("j2", "shipping", "chat")),
        (b'{"id": "bad-json", "text": "unterminated', "malformed JSON"),
        (b'["not", "an", "object"]', "not an object"),
        (b'"a JSON string"', "not an object"),
        (b'{"id": "bad-bytes", "text": "caf\xe9 \xff"}', "undecodable"),
        (b"   \t", None),                                       # whitespace-only line
        (_line(_doc("j3")), _doc("j3")),
    ]
    # No newline after the last line: it is still a record.
    (d1 / "a.jsonl").write_bytes(b"\n".join(raw for raw, _ in lines))
    for n, (_, what) in enumerate(lines, start=1):
        if isinstance(what, dict):
            good.append((t1, "a.jsonl", n, what))
        elif isinstance(what, str):
            bad.append((t1, "a.jsonl", n, what))

    gz_lines = [_line(_doc("g1")), b"{oops", _line(_doc("g2", "returns"))]
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
    bad.append((t2, "broken.parquet", 1, "unreadable parquet"))
    (d2 / "ok.jsonl").write_bytes(_line(_doc("k1")) + b"\n" + _line(_doc("k2")) + b"\n")
    good += [(t2, "ok.jsonl", 1, _doc("k1")), (t2, "ok.jsonl", 2, _doc("k2"))]

    read = {t1: 0, t2: 0}
    for tranche, *_ in good + bad:
        read[tranche] += 1
    return {"root": str(tmp_path), "good": good, "bad": bad, "read": read}


def test_read_tranches_all_formats_dead_letters_and_stats(pipeline: Any,
                                                          landing: dict[str, Any]) -> None:
    plans = plan_tranches(landing["root"], [DAY1, DAY2])
    chunks = plan_chunks(plans, 1 << 20)
    fields = FieldsConfig(metadata=["channel"])
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


def _numbered_jsonl(n: int) -> tuple[bytes, dict[int, str]]:
    """Lines of varied length with blank and malformed lines; {line number: id or DEAD}."""
    parts, expected = [], {}
    for i in range(n):
        lineno = len(parts) + 1
        if i % 9 == 4:
            parts.append(b"")
            continue
        if i % 11 == 7:
            parts.append(b'{"id": "broken", "text": ')
            expected[lineno] = "DEAD"
            continue
        parts.append(_line({"id": f"r{i}", "text": "w" * (i * 7 % 23)}))
        expected[lineno] = f"r{i}"
    return b"\n".join(parts) + b"\n", expected


def _read_chunks_directly(chunks: list[Any]) -> list[tuple[int, str]]:
    out = []
    for chunk in chunks:
        for item in _ReadChunkFn(FieldsConfig(), 4, 100).process(chunk):
            if isinstance(item, beam.pvalue.TaggedOutput):
                if item.tag == DEAD_LETTERS:
                    out.append((item.value["position"], "DEAD"))
            else:
                out += list(zip(item.frame[POSITION].tolist(), item.frame[DOC_ID].tolist()))
    return out


def test_every_chunk_size_reads_each_line_exactly_once(tmp_path: Path) -> None:
    data, expected = _numbered_jsonl(16)
    (_folder(tmp_path, DAY1) / "a.jsonl").write_bytes(data)
    plans = plan_tranches(str(tmp_path), [DAY1])
    # Lines are at most ~40 bytes: sizes 3..63 put boundaries at every kind of offset.
    for chunk_bytes in [*range(3, 64), len(data) - 1, len(data), len(data) + 1]:
        got = _read_chunks_directly(plan_chunks(plans, chunk_bytes))
        assert sorted(got) == sorted(expected.items()), f"chunk_bytes={chunk_bytes}"


def test_parquet_row_ranges_read_each_row_exactly_once(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"id": f"r{i}", "text": f"text {i}"} for i in range(103)]
    pq.write_table(pa.Table.from_pylist(rows), _folder(tmp_path, DAY1) / "a.parquet",
                   row_group_size=40)
    plans = plan_tranches(str(tmp_path), [DAY1])
    expected = sorted((i + 1, f"r{i}") for i in range(103))
    for chunk_rows in (1, 7, 40, 41, 102, 103):
        chunks = plan_chunks(plans, 1 << 20, chunk_rows=chunk_rows)
        assert len(chunks) == -(-103 // chunk_rows)
        assert sorted(_read_chunks_directly(chunks)) == expected, f"chunk_rows={chunk_rows}"


def test_balanced_chunks_have_similar_rows_largest_first(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from transforms.read import balanced_chunks

    folder = _folder(tmp_path, DAY1)
    big = [{"id": f"p{i}", "text": "x" * 50} for i in range(20_000)]
    pq.write_table(pa.Table.from_pylist(big), folder / "big.parquet")
    lines = [json.dumps({"id": f"j{i}", "text": "y" * 200}) for i in range(20_000)]
    (folder / "a.jsonl").write_text("\n".join(lines) + "\n")  # 4.4 MB: above the 1 MiB floor
    chunks = balanced_chunks(plan_tranches(str(tmp_path), [DAY1]), 64 << 20, workers=2)
    sizes = [c.est_rows for c in chunks]
    assert sizes == sorted(sizes, reverse=True)
    assert max(sizes) <= 1.3 * 40_000 / 16  # ~1/16 of all rows: 8 chunks per worker
    assert sorted(_read_chunks_directly(chunks)) == sorted(
        _read_chunks_directly(plan_chunks(plan_tranches(str(tmp_path), [DAY1]), 1 << 30)))


def test_chunked_jsonl_in_a_pipeline_boundaries_mid_line_and_on_newlines(
        pipeline: Any, tmp_path: Path) -> None:
    data, expected = _numbered_jsonl(60)
    (_folder(tmp_path, DAY1) / "a.jsonl").write_bytes(data)
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
        out = p | ReadTranches(chunks, FieldsConfig(), batch_size=3, payload_limit=100)
        records = out.batches | beam.FlatMap(
            lambda b: zip(b.frame[POSITION].tolist(), b.frame[DOC_ID].tolist()))
        dead = out[DEAD_LETTERS] | beam.Map(lambda d: (d["position"], "DEAD"))
        merged = (records, dead) | beam.Flatten()
        assert_that(merged, equal_to(list(expected.items())))


def test_corrupt_parquet_alone_is_one_dead_letter(pipeline: Any, tmp_path: Path) -> None:
    (_folder(tmp_path, DAY1) / "x.parquet").write_bytes(b"\x00" * 64)
    chunks = plan_chunks(plan_tranches(str(tmp_path), [DAY1]), 1 << 20)
    with pipeline as p:
        out = p | ReadTranches(chunks, FieldsConfig(), batch_size=10, payload_limit=100)
        assert_that(out.batches, equal_to([]), label="no batches")
        assert_that(out[DEAD_LETTERS] | beam.Map(lambda d: (d["stage"], d["tranche"])),
                    equal_to([("read", "2026-01-01")]), label="one dead letter")
        assert_that(out[STATS] | beam.Map(lambda kv: kv[1]["read"]), equal_to([1]),
                    label="counted as read")


def test_csv_with_byte_order_mark_is_read(tmp_path: Path) -> None:
    (_folder(tmp_path, DAY1) / "a.csv").write_bytes(
        "\ufeffid,text\nx1,hello there\nx2,general kenobi\n".encode())
    chunks = plan_chunks(plan_tranches(str(tmp_path), [DAY1]), 1 << 20)
    assert sorted(_read_chunks_directly(chunks)) == [(1, "x1"), (2, "x2")]


# ------------------------------------------------------------------ DocBatch coder
def test_docbatch_pcollections_are_typed_and_use_the_docbatch_coder(
        registry_root: str, model_ref: Any, tmp_path: Path) -> None:
    """Every DocBatch PCollection of the scoring graph gets DocBatchCoder, whose cheap
    size estimate replaces pickling a whole frame when Beam samples element sizes."""
    from transforms.inference import DocBatchModelHandler, ScoreBatches
    from transforms.preprocess import PreprocessConfig
    from transforms.records import DocBatchCoder
    from transforms.sink import RunContext, WritePredictionFiles
    from transforms.validate import ValidateAndPreprocess

    handler = DocBatchModelHandler(registry_root, model_ref, top_k=3)
    ctx = RunContext("r", model_ref.name, model_ref.version, model_ref.sha256, "t")
    p = beam.Pipeline()  # built, never run
    read = p | ReadTranches([], FieldsConfig(), batch_size=10, payload_limit=100)
    valid = read.batches | ValidateAndPreprocess(PreprocessConfig(), 100, 100)
    scored = valid.valid | ScoreBatches(handler, 0, 100)
    files = scored["scored"] | WritePredictionFiles(str(tmp_path), ctx)
    for pcoll in (read.batches, valid.valid, scored["scored"], files):
        assert pcoll.element_type is DocBatch, pcoll
        assert isinstance(beam.coders.registry.get_coder(pcoll.element_type), DocBatchCoder)


def test_docbatch_coder_round_trips_and_estimates_the_size(make_batch: Any) -> None:
    from transforms.records import DocBatchCoder

    rows = [{"id": f"d{i}", "text": "word " * (20 + i % 50), "label": "billing",
             "channel": "email"} for i in range(500)]
    batch = make_batch(rows)
    impl = DocBatchCoder().get_impl()
    decoded = impl.decode(impl.encode(batch))
    assert (decoded.tranche, decoded.source_file, decoded.batch_key) == \
        (batch.tranche, batch.source_file, batch.batch_key)
    assert decoded.frame.equals(batch.frame)
    actual = len(impl.encode(batch))
    assert actual / 2 <= impl.estimate_size(batch) <= actual * 3
    empty = make_batch([])
    assert 0 < impl.estimate_size(empty) <= len(impl.encode(empty)) * 3
