"""Small files packed into read tasks: a batch spans files of one tranche, and every row
keeps its own file and position through validation, scoring, the prediction files, the
``predictions`` table, the duplicate check and the dead letters."""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
import json
import math
import os
from pathlib import Path
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to
from hypothesis import given, settings
from hypothesis import strategies as st

from landing.chunks import ReadTask, balanced_tasks
from landing.tranches import plan_tranches
from models.preprocess import PreprocessConfig, preprocess_texts
from models.registry import ModelRef
from store.database import connect
from store.session import DatabaseSettings
from tests.data import day_folder, json_line, sqlite_rows
from transforms.dead_letters import WriteDeadLetters
from transforms.dedupe import FindDuplicateIds
from transforms.infer import DocBatchModelHandler, ScoreBatches
from transforms.read import ReadTranches
from transforms.records import DEAD_LETTERS, POSITION, SOURCE, FieldNames, RunContext
from transforms.validate import ValidateAndPreprocess
from transforms.write import IDS, SinkSettings, WriteToDatabase

DAY = dt.date(2026, 1, 1)
CTX = RunContext("run-s", "demo", "1", "ab" * 32, "2026-01-02T00:00:00+00:00")
WORDS = ("invoice refund charge", "parcel courier late", "login crash error",
         "password locked email", "return damaged exchange")
Row = tuple[str, int, str, str]  # (source file, position, doc id, label)
Dead = tuple[str, int, str, str]  # (source file, position, stage, reason)


def _score(tasks: list[Any], registry_root: str, model_ref: ModelRef, out: Path,
           batch_size: int, together: frozenset[tuple[str, int]] = frozenset()
           ) -> tuple[list[Row], list[Dead], set[Row]]:
    """The scoring pipeline's stages on ``tasks`` (SQLite, Parquet files): the predictions
    rows, the dead letters and the rows of the Parquet files. Asserts inside the
    pipeline that the read batches are few (``_check_batches``) and that one of them
    holds all the records ``together`` (file name, position)."""
    db = out / "s.db"
    out.mkdir(parents=True, exist_ok=True)
    schema = connect(f"sqlite:///{db}")  # the tables, also where nothing is written
    schema.init_schema()
    schema.close()
    sink = SinkSettings(DatabaseSettings(f"sqlite:///{db}"), payload_limit=500)
    handler = DocBatchModelHandler(registry_root, model_ref, top_k=2, payload_limit=500)
    with test_pipeline.TestPipeline(runner="FnApiRunner") as p:
        read = p | ReadTranches(tasks, FieldNames(), batch_size, 500)
        valid = read.batches | ValidateAndPreprocess(PreprocessConfig(), 10_000, 500)
        scored = valid.valid | ScoreBatches(handler, 500)
        written = scored["scored"] | WriteToDatabase(sink, CTX, str(out))
        dups = written[IDS] | FindDuplicateIds(str(out), CTX, 500)
        dead = ((read[DEAD_LETTERS], valid[DEAD_LETTERS], scored[DEAD_LETTERS],
                 written[DEAD_LETTERS], dups) | beam.Flatten())
        _ = dead | WriteDeadLetters(sink, CTX.run_id, str(out))
        sizes = read.batches | beam.Map(len)
        assert_that(sizes | beam.combiners.ToList(), _check_batches(tasks, batch_size),
                    label="batches")
        if together:
            holding = read.batches | beam.Filter(lambda b: together <= set(zip(
                map(os.path.basename, b.frame[SOURCE]), b.frame[POSITION])))
            assert_that(holding | beam.combiners.Count.Globally(), equal_to([1]),
                        label="together")
    rows = sqlite_rows(db, "SELECT source_file, position, doc_id, label FROM predictions")
    letters = sqlite_rows(db, "SELECT source_file, position, stage, reason FROM dead_letters")
    in_files = {(r["source_file"], r["position"], r["doc_id"], r["label"])
                for f in out.glob("dt=*/predictions-*.parquet")
                for r in pq.read_table(f).to_pylist()}
    return rows, letters, in_files


def _check_batches(tasks: list[Any], batch_size: int) -> Any:
    """Every batch full but the last of each task: no more batches than the tasks' records
    cut into ``batch_size``, one per task at most beyond it."""
    def check(sizes_lists: list[list[int]]) -> None:
        [sizes] = sizes_lists
        assert all(0 < n <= batch_size for n in sizes), sizes
        assert len(sizes) <= math.ceil(sum(sizes) / batch_size) + len(tasks) - 1, sizes
    return check


def _jsonl(records: list[Any]) -> bytes:
    return b"".join((r if isinstance(r, bytes) else json_line(r)) + b"\n" for r in records)


def test_a_tranche_of_tiny_files_is_read_in_few_full_batches_each_row_naming_its_file(
        registry_root: str, model_ref: ModelRef, tmp_path: Path) -> None:
    """Thirty-seven files (one empty, one with a bad line, a gz, a CSV, a Parquet file, an
    unreadable one, 30 of two records) in one tranche: one read task, batches of
    ``batch_size`` across files, every prediction and dead letter at its own file and
    position (the unreadable file one dead letter at 0); an id in
    two files of the same batch keeps the earlier file's row, in the table and the
    Parquet files, and the later one is a dead letter naming the first."""
    root = tmp_path / "in"
    folder = day_folder(root, DAY)
    doc = lambda i: {"id": i, "text": f"{WORDS[len(i) % 5]} {i}"}  # noqa: E731
    (folder / "a.jsonl").write_bytes(_jsonl([doc("a1"), doc("dup"), doc("a3")]))
    (folder / "b.jsonl").write_bytes(b"")
    (folder / "c.jsonl").write_bytes(_jsonl([doc("c1"), b'{"id": "c2", "text": ', doc("c3")]))
    (folder / "d.jsonl.gz").write_bytes(gzip.compress(_jsonl([doc("d1"), {"id": "d2"}])))
    (folder / "e.csv").write_text("id,text\ndup,a later dup\ne2,shipped late\n")
    pq.write_table(pa.Table.from_pylist([doc("f1"), doc("f2"), doc("f3")]), folder / "f.parquet")
    (folder / "h.parquet").write_bytes(b"PAR1 not a parquet file PAR1")
    for i in range(30):
        (folder / f"g{i:02d}.jsonl").write_bytes(_jsonl([doc(f"g{i}x"), doc(f"g{i}y")]))
    tasks = balanced_tasks(plan_tranches(str(root), [DAY]), 64 << 20, workers=2)
    assert len(tasks) == 1 and len(tasks[0].chunks) == 37
    out = tmp_path / "out"
    rows, letters, in_files = _score(tasks, registry_root, model_ref, out, batch_size=8,
                                     together=frozenset({("a.jsonl", 2), ("e.csv", 1)}))
    records = 3 + 2 + 2 + 2 + 3 + 60  # parsed records: 72, in ceil(72 / 8) = 9 batches
    assert len(list(out.glob("dt=*/predictions-*.parquet"))) == math.ceil(records / 8)
    path = {name: str(folder / name) for name in os.listdir(folder)}
    got = {(os.path.basename(f), pos, i) for f, pos, i, _ in rows}
    assert got == ({("a.jsonl", 1, "a1"), ("a.jsonl", 2, "dup"), ("a.jsonl", 3, "a3"),
                    ("c.jsonl", 1, "c1"), ("c.jsonl", 3, "c3"), ("d.jsonl.gz", 1, "d1"),
                    ("e.csv", 2, "e2"), ("f.parquet", 1, "f1"), ("f.parquet", 2, "f2"),
                    ("f.parquet", 3, "f3")}
                   | {(f"g{i:02d}.jsonl", 1 + j, f"g{i}{c}")
                      for i in range(30) for j, c in enumerate("xy")})
    assert in_files == set(rows)
    dead = sorted((os.path.basename(f), pos, stage, reason.split(":")[0])
                  for f, pos, stage, reason in letters)
    assert dead == [("c.jsonl", 2, "read", "malformed JSON"),
                    ("d.jsonl.gz", 2, "validate", "missing text"),
                    ("e.csv", 1, "dedupe", "duplicate id in tranche"),
                    ("h.parquet", 0, "read", "unreadable parquet file")]
    [reason] = [r for _, _, s, r in letters if s == "dedupe"]
    assert reason == f"duplicate id in tranche: first at {path['a.jsonl']} position 2"
    # the two occurrences were in one batch (``together``): its file kept a.jsonl's row
    assert [(r["source_file"], r["position"]) for f in out.glob("dt=*/predictions-*.parquet")
            for r in pq.read_table(f).to_pylist() if r["doc_id"] == "dup"] == [
        (path["a.jsonl"], 2)]


# ------------------------------------------------------------------ differential


@st.composite
def _landings(draw: Any) -> dict[str, Any]:
    """Files of a tranche: each a format, 0-6 records of ids drawn from a small pool (so
    ids repeat within and across files), some lines bad; a batch size; cuts of the
    files (in path order) into read tasks."""
    n_files = draw(st.integers(1, 9))
    files = []
    for i in range(n_files):
        fmt = draw(st.sampled_from(("jsonl", "jsonl.gz", "csv", "parquet")))
        kinds = ["good", "no id", "empty text"] + (["bad json"] if "jsonl" in fmt else [])
        records = [(draw(st.sampled_from(kinds)), f"id{draw(st.integers(0, 7))}",
                    draw(st.sampled_from(WORDS)))
                   for _ in range(draw(st.integers(0, 6)))]
        files.append((f"f{i}.{fmt}", fmt, records))
    cuts = sorted(draw(st.sets(st.integers(1, max(1, n_files - 1)), max_size=3)))
    return {"files": files, "batch_size": draw(st.integers(1, 12)), "cuts": cuts}


def _write(folder: Path, name: str, fmt: str, records: list[tuple[str, str, str]]) -> None:
    rows = [{"id": i, "text": t} if k == "good" else {"text": t} if k == "no id"
            else {"id": i, "text": ""} if k == "empty text" else None for k, i, t in records]
    if fmt.startswith("jsonl"):
        data = _jsonl([b'{"id": 1, "text": ' if r is None else r for r in rows])
        (folder / name).write_bytes(gzip.compress(data) if fmt.endswith(".gz") else data)
    elif fmt == "csv":
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(["id", "text"])
        writer.writerows([[r.get("id", ""), r["text"]] for r in rows if r is not None])
        (folder / name).write_text(text.getvalue())
    else:
        table = pa.table({"id": pa.array([r.get("id") for r in rows if r is not None],
                                         pa.string()),
                          "text": pa.array([r["text"] for r in rows if r is not None],
                                           pa.string())})
        pq.write_table(table, folder / name)


def _reference(folder: Path, landing: dict[str, Any], model: Any) -> tuple[set[Row], set[Dead]]:
    """What scoring must give, by Python's json, csv and pyarrow file by file, the
    validation rules the records break here, the model on each text alone, and the first
    occurrence of an id (file order, then position) kept."""
    valid: list[tuple[str, int, str, str]] = []
    dead: set[Dead] = set()
    for name, fmt, _ in sorted(landing["files"]):
        path = str(folder / name)
        if fmt.startswith("jsonl"):
            data = (folder / name).read_bytes()
            lines = (gzip.decompress(data) if fmt.endswith(".gz") else data).splitlines()
            records: list[tuple[int, Any]] = []
            for n, line in enumerate(lines, start=1):
                try:
                    records.append((n, json.loads(line)))
                except ValueError:
                    dead.add((path, n, "read", "malformed JSON"))
        elif fmt == "csv":
            records = list(enumerate(csv.DictReader(io.StringIO((folder / name).read_text())),
                                     start=1))
        else:
            records = list(enumerate(pq.read_table(folder / name).to_pylist(), start=1))
        for n, r in records:
            if not r.get("id"):
                dead.add((path, n, "validate", "missing id" if r.get("id") is None
                          else "empty id"))
            elif not r.get("text"):
                dead.add((path, n, "validate", "empty text"))
            else:
                valid.append((path, n, r["id"], r["text"]))
    classes = [str(c) for c in model.classes_]
    first: dict[str, tuple[str, int]] = {}
    rows: set[Row] = set()
    for path, n, doc_id, text in sorted(valid):
        if doc_id in first:
            at = first[doc_id]
            dead.add((path, n, "dedupe", f"duplicate id in tranche: first at {at[0]} "
                                         f"position {at[1]}"))
            continue
        first[doc_id] = (path, n)
        probs = model.predict_proba(preprocess_texts([text], PreprocessConfig()))
        rows.add((path, n, doc_id, classes[int(np.argmax(probs[0]))]))
    return rows, dead


@settings(max_examples=20)
@given(landing=_landings())
def test_packed_small_files_score_as_each_file_read_alone(
        registry_root: str, model_ref: ModelRef, trained_model: Any,
        tmp_path_factory: Any, landing: dict[str, Any]) -> None:
    """Whatever the files (empty ones, bad lines, ids repeated within and across files)
    and however they are packed into read tasks, the predictions rows, the Parquet
    files' rows and the dead letters are those of a reference that reads each file
    alone and keeps the first occurrence of an id by file order, then position."""
    tmp = tmp_path_factory.mktemp("small")
    folder = day_folder(tmp / "in", DAY)
    for name, fmt, records in landing["files"]:
        _write(folder, name, fmt, records)
    [plan] = plan_tranches(str(tmp / "in"), [DAY])
    chunks = sorted((c for t in balanced_tasks([plan], 64 << 20, 1) for c in t.chunks),
                    key=lambda c: c.path)
    bounds = [0, *[c for c in landing["cuts"] if c < len(chunks)], len(chunks)]
    tasks = [ReadTask(tuple(chunks[a:b])) for a, b in zip(bounds, bounds[1:]) if b > a]
    rows, letters, in_files = _score(tasks, registry_root, model_ref, tmp / "out",
                                     landing["batch_size"])
    want_rows, want_dead = _reference(folder, landing, trained_model)
    assert set(rows) == want_rows and len(rows) == len(want_rows)
    assert in_files == want_rows
    got_dead = {(f, pos, stage, reason if stage == "dedupe" else reason.split(":")[0])
                for f, pos, stage, reason in letters}
    assert got_dead == want_dead and len(letters) == len(want_dead)

