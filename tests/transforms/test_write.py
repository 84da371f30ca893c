"""WriteToDatabase in a pipeline: writes re-cut to the batch limits, rejected rows
dead-lettered, every row counted once in its tranche."""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import apache_beam as beam
import pandas as pd
import pyarrow.parquet as pq
import pytest
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from store.backends.sqlite import SQLiteDatabase, SQLiteDialect
from store.file_locks import FileSlots, WriterLock
from store.schema import PREDICTIONS
from store.session import DatabaseSettings
from tests.data import fail_first_writes, sqlite_rows
from transforms.records import (
    DEAD_LETTERS,
    DOC_ID,
    LABEL,
    METADATA,
    POSITION,
    RAW,
    SOURCE,
    TEXT,
    DocBatch,
    RunContext,
)
from transforms.write import SinkSettings, WriteToDatabase

CTX = RunContext("run-x", "demo", "1", "ab" * 32, "2026-01-02T03:04:05+00:00")


def batch(tranche: str, start: int, n: int, labels: list[str] | None = None) -> DocBatch:
    frame = pd.DataFrame({
        DOC_ID: [f"{tranche}-{i:04d}" for i in range(start, start + n)],
        SOURCE: [f"/in/{tranche}.jsonl"] * n, POSITION: range(start + 1, start + n + 1),
        METADATA: [None] * n, LABEL: [None] * n,
        RAW: [{"id": f"{tranche}-{i:04d}"} for i in range(start, start + n)],
        "pred_label": labels or ["billing"] * n, "pred_score": [0.5] * n,
        "pred_top_k": ["[]"] * n,
    })
    return DocBatch(tranche, f"{tranche}-{start}", frame)


def _write_sizes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The rows of each SQLite write of predictions, appended as they happen."""
    sizes: list[int] = []
    real = SQLiteDatabase.upsert_predictions

    def recording(self: SQLiteDatabase, rows: Any, fence: Any = None) -> int:
        sizes.append(len(rows))
        return real(self, rows, fence)

    monkeypatch.setattr(SQLiteDatabase, "upsert_predictions", recording)
    return sizes


def test_sink_flushes_at_batch_rows_and_batch_bytes_and_counts_every_row(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Uneven input batches from two tranches are re-cut into writes of at most batch_rows
    rows or batch_bytes bytes; every row is written once and counted in its tranche."""
    sizes = _write_sizes(monkeypatch)

    inputs = [batch("t1", 0, 37), batch("t2", 0, 5), batch("t1", 37, 58), batch("t2", 5, 1)]
    # A row is estimated at ~207 bytes (id + top-k + source file + 200): 1,500 bytes ~ 7 rows.
    for batch_rows, batch_bytes, cap in ((16, 16 << 20, 16), (1000, 1500, 8)):
        sizes.clear()
        url = f"sqlite:///{tmp_path}/{batch_rows}.db"
        settings = SinkSettings(DatabaseSettings(url, batch_rows=batch_rows,
                                                 batch_bytes=batch_bytes))
        with test_pipeline.TestPipeline(runner="FnApiRunner") as p:
            out = (p | beam.Create(inputs, reshuffle=False)
                   | WriteToDatabase(settings, CTX, str(tmp_path / "out")))
            totals = (out.stats | beam.MapTuple(lambda t, s: (t, (s["scored"], s["written"])))
                      | beam.CombinePerKey(lambda vs: tuple(map(sum, zip(*vs)))))
            assert_that(totals, equal_to([("t1", (95, 95)), ("t2", (6, 6))]))
        assert sum(sizes) == 101 and max(sizes) <= cap and len(sizes) >= 101 // cap
        assert sqlite_rows(tmp_path / f"{batch_rows}.db",
                     "SELECT count(*), count(DISTINCT doc_id) FROM predictions") == [(101, 101)]



def test_the_byte_limit_counts_the_records_held_for_dead_letters(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Until its write, a row's record is held (a rejected row becomes a dead letter with
    it): with long texts a buffer reaches ``batch_bytes`` in fewer rows, also when its
    writes wait, so what a worker holds stays within ``batch_bytes``."""
    sizes = _write_sizes(monkeypatch)
    text = "word " * 2000  # 10,000 characters a record
    db = DatabaseSettings(f"sqlite:///{tmp_path / 'b.db'}", batch_rows=1000,
                          batch_bytes=100_000, state_dir=str(tmp_path / "state"))
    fn = WriteToDatabase(SinkSettings(db), CTX, str(tmp_path / "out"))._fn
    fn.setup()
    fn._session.ready = lambda: False  # type: ignore[method-assign]  # always taken
    fn.start_bundle()
    for i in range(5):
        one = batch("t1", i * 20, 20)
        one.frame[TEXT] = text
        list(fn.process(one))
        assert fn._bytes <= 100_000
    list(fn.finish_bundle())
    fn.teardown()
    assert sum(sizes) == 100 and max(sizes) <= 10  # ~10,200 bytes a row: 9-10 rows a write


def test_rows_the_database_rejects_are_dead_lettered_and_the_rest_written(
        tmp_path: Path) -> None:
    """A stricter table than beamscore's own (labels of at most 8 characters): the rows
    it rejects leave as sink dead letters with the database's message and position."""
    db_path = tmp_path / "strict.db"
    conn = sqlite3.connect(db_path)
    create = SQLiteDialect().ddl(PREDICTIONS)[0]
    conn.execute(create.replace("label TEXT NOT NULL",
                                "label TEXT NOT NULL CHECK (length(label) <= 8)"))
    conn.close()
    labels = ["billing" if i % 7 else "technical" for i in range(40)]
    settings = SinkSettings(DatabaseSettings(f"sqlite:///{db_path}", batch_rows=16))
    with test_pipeline.TestPipeline(runner="FnApiRunner") as p:
        out = p | beam.Create([batch("t1", 0, 40, labels)]) | WriteToDatabase(
            settings, CTX, str(tmp_path / "out"))
        dead = out[DEAD_LETTERS] | beam.Map(lambda d: (d["position"], d["stage"],
                                                      "CHECK constraint" in d["reason"]))
        assert_that(dead, equal_to([(i + 1, "sink", True) for i in range(0, 40, 7)]),
                    label="dead")
        totals = out.stats | beam.Map(lambda kv: (kv[1]["scored"], kv[1]["written"])) \
            | beam.CombineGlobally(lambda vs: tuple(map(sum, zip(*vs))))
        assert_that(totals, equal_to([(40, 34)]), label="counts")
    assert sqlite_rows(db_path, "SELECT count(*) FROM predictions") == [(34,)]
    assert sqlite_rows(
        db_path, "SELECT count(*) FROM predictions WHERE label = 'technical'") == [(0,)]
    # The batch's file holds what the table holds: the refused rows never reach it.
    [file] = (tmp_path / "out").glob("dt=t1/predictions-demo-v1-*.parquet")
    assert sorted(pq.read_table(file).column("position").to_pylist()) == [
        i + 1 for i in range(40) if i % 7]


@pytest.mark.postgres
def test_a_value_binary_copy_cannot_send_is_one_dead_letter_naming_its_column(
        pg_url: str, tmp_path: Path) -> None:
    """PostgreSQL: a row whose json column holds a list (not JSON text) is refused by
    the client as a permanent error; the sink isolates it into a dead letter naming the
    column, and the rest of the write, before and after it, is stored."""
    from store.database import connect

    db = connect(pg_url)
    db.init_schema()
    db.close()
    bad = batch("t1", 0, 40)
    bad.frame.at[9, METADATA] = ["not", "json text"]
    settings = SinkSettings(DatabaseSettings(pg_url, batch_rows=16))
    with test_pipeline.TestPipeline(runner="FnApiRunner") as p:
        out = p | beam.Create([bad]) | WriteToDatabase(settings, CTX, str(tmp_path / "out"))
        dead = out[DEAD_LETTERS] | beam.Map(lambda d: (d["position"], d["stage"],
                                                      "column metadata (json)" in d["reason"]))
        assert_that(dead, equal_to([(10, "sink", True)]), label="dead")
        totals = out.stats | beam.Map(lambda kv: (kv[1]["scored"], kv[1]["written"])) \
            | beam.CombineGlobally(lambda vs: tuple(map(sum, zip(*vs))))
        assert_that(totals, equal_to([(40, 39)]), label="counts")
    db = connect(pg_url)
    try:
        assert db.execute("SELECT count(*), min(position), max(position) FROM predictions"
                          ) == [(39, 1, 40)]
    finally:
        db.close()


def test_a_lost_connection_is_retried_and_its_backoff_counted_as_throttled_time(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write that loses its connection is retried on a new one; the backoff shows as
    ``throttled_ms`` in the stats and no row is lost or written twice."""
    lost = fail_first_writes(monkeypatch, "upsert_predictions", 2)
    db = tmp_path / "r.db"
    settings = SinkSettings(DatabaseSettings(f"sqlite:///{db}", batch_rows=10))
    with test_pipeline.TestPipeline(runner="FnApiRunner") as p:
        out = p | beam.Create([batch("t1", 0, 25)]) | WriteToDatabase(
            settings, CTX, str(tmp_path / "out"))
        totals = out.stats | beam.Map(lambda kv: (kv[1]["written"],
                                                  kv[1].get("throttled_ms", 0))) \
            | beam.CombineGlobally(lambda vs: tuple(map(sum, zip(*vs))))
        assert_that(totals | beam.Map(lambda t: (t[0], t[1] >= 2 * 200)),
                    equal_to([(25, True)]))
    assert lost == [0]
    assert sqlite_rows(db, "SELECT count(*), count(DISTINCT doc_id) FROM predictions") == [
        (25, 25)]


def _written(path: Path) -> int:
    if not path.exists():
        return 0
    return sqlite_rows(path, "SELECT count(*) FROM predictions")[0][0]


def test_a_full_buffer_waits_in_memory_while_the_database_is_taken(tmp_path: Path) -> None:
    """A worker whose write would wait (every connection slot held by another worker,
    or the machine's SQLite writer busy) goes on: its rows wait in the buffer, up to
    ``DEFERRED_ROWS`` times ``batch_rows``, and are written at the next multiple of
    ``batch_rows`` after the database frees; only a buffer that full waits for it.
    Writes keep their size; every row once."""
    path = tmp_path / "d.db"
    db = DatabaseSettings(f"sqlite:///{path}", batch_rows=10, max_connections=1,
                          state_dir=str(tmp_path / "state"), lease_seconds=5,
                          max_retries=0)  # a wait that should not be fails in seconds
    fn = WriteToDatabase(SinkSettings(db), CTX, str(tmp_path / "out"))._fn
    assert fn.DEFERRED_ROWS >= 3
    limit = fn.DEFERRED_ROWS * 10
    other = FileSlots(db.identity, 1, db.state_dir)
    assert other.try_acquire()  # another worker holds the only connection slot
    fn.setup()
    fn.start_bundle()
    started = time.monotonic()
    assert list(fn.process(batch("t1", 0, 10))) == []
    assert time.monotonic() - started < 5
    assert _written(path) == 0 and other.contended()  # it wants the slot, and waited not
    other.release()
    out = list(fn.process(batch("t1", 10, 10)))  # 20 rows: free now, written
    assert _written(path) == 20
    assert [v for v in out if isinstance(v, tuple)] == [("t1", {"scored": 20, "written": 20})]

    writer = WriterLock(db.identity, db.state_dir)
    writer.acquire()  # another worker's SQLite write is under way
    assert [list(fn.process(batch("t2", i * 10, 10))) for i in range(2)] == [[], []]
    assert _written(path) == 20
    writer.release()
    list(fn.process(batch("t2", 20, 10)))
    assert _written(path) == 20 + 30

    writer.acquire()  # busy again: a buffer at the limit waits for it
    threading.Timer(0.5, writer.release).start()
    started = time.monotonic()
    for i in range(limit // 10):
        list(fn.process(batch("t3", i * 10, 10)))
    assert time.monotonic() - started >= 0.4
    assert _written(path) == 50 + limit
    list(fn.finish_bundle())
    fn.teardown()
    assert sqlite_rows(path, "SELECT count(*), count(DISTINCT doc_id) FROM predictions") == [
        (50 + limit, 50 + limit)]


def test_writes_are_whole_batches_however_the_input_is_cut(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Input batches of 6 rows, ``batch_rows`` 10, nothing else writing: every write but
    the bundle's last holds 10 rows."""
    sizes = _write_sizes(monkeypatch)
    db = DatabaseSettings(f"sqlite:///{tmp_path / 'w.db'}", batch_rows=10,
                          state_dir=str(tmp_path / "state"))
    fn = WriteToDatabase(SinkSettings(db), CTX, str(tmp_path / "out"))._fn
    fn.setup()
    fn.start_bundle()
    for i in range(11):
        list(fn.process(batch("t1", i * 6, 6)))
    list(fn.finish_bundle())
    fn.teardown()
    assert sizes == [10] * 6 + [6]


@given(sizes=st.lists(st.integers(1, 25), min_size=1, max_size=12),
       batch_rows=st.integers(1, 12), free=st.lists(st.booleans(), min_size=1))
@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_whatever_the_input_and_the_contention_every_row_once_in_whole_writes(
        tmp_path: Path, sizes: list[int], batch_rows: int, free: list[bool]) -> None:
    """Against a plain reference (the rows in order, cut every ``batch_rows``): input
    batches of any size, and the database free or taken at each moment the sink asks,
    give the same writes, every row once, and never more than ``DEFERRED_ROWS`` times
    ``batch_rows`` rows held."""
    path = tmp_path / f"p-{uuid.uuid4().hex}.db"
    db = DatabaseSettings(f"sqlite:///{path}", batch_rows=batch_rows,
                          state_dir=str(tmp_path / "state"))
    fn = WriteToDatabase(SinkSettings(db), CTX, str(tmp_path / "out"))._fn
    answers = iter(free * 100)
    fn.setup()
    fn._session.ready = lambda: next(answers, True)  # type: ignore[method-assign]
    written: list[int] = []
    real = fn._table.upsert

    def recording(database: Any, rows: Any) -> int:
        written.append(len(rows))
        return real(database, rows)

    fn._table.upsert = recording  # type: ignore[method-assign]
    fn.start_bundle()
    total = 0
    for n in sizes:
        list(fn.process(batch("t1", total, n)))
        total += n
        assert total - sum(written) <= fn.DEFERRED_ROWS * batch_rows
    list(fn.finish_bundle())
    fn.teardown()
    reference = [batch_rows] * (total // batch_rows) + ([total % batch_rows]
                                                         if total % batch_rows else [])
    assert written == reference
    assert sqlite_rows(path, "SELECT count(*), count(DISTINCT doc_id) FROM predictions") == [
        (total, total)]


def test_writers_under_a_rate_limit_and_one_connection_slot_never_wait_for_each_other(
        tmp_path: Path) -> None:
    """One connection slot, 300 rows a second, writes of 75 rows. A writer keeps its
    slot after a quick write; four others then want to write. Were they to book their
    rows against the rate before waiting for the slot, their bookings would fill the
    second's budget, and the holder's next write would wait for budget while holding
    the slot they wait for, until their wait timed out. A writer takes its slot first,
    then books: every write is done in seconds, none fails."""
    db = DatabaseSettings(f"sqlite:///{tmp_path / 'r.db'}", batch_rows=75, max_connections=1,
                          max_rows_per_second=300, state_dir=str(tmp_path / "state"),
                          lease_seconds=4, max_retries=0)  # a slot waited 4 s for: failed
    fns = [WriteToDatabase(SinkSettings(db), CTX, str(tmp_path / "out"))._fn
           for _ in range(5)]
    for fn in fns:
        fn.setup()
        fn.start_bundle()
    rows = [fn._table.prepare(batch(f"w{k}", 0, 75))[0].rows for k, fn in enumerate(fns)]
    holder, waiters = fns[0], fns[1:]
    holder.write(rows[0])  # quick: the holder keeps its slot
    errors: list[BaseException] = []

    def write(fn: Any, part: list[Any]) -> None:
        try:
            fn.write(part)
            list(fn.finish_bundle())  # its bundle ends: its slot is free
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(fn, part), daemon=True)
               for fn, part in zip(waiters, rows[1:])]
    started = time.monotonic()
    for t in threads:
        t.start()
    time.sleep(1.0)
    holder.write(rows[0])  # its next write, the others waiting for its slot
    for t in threads:
        t.join(timeout=20)
    assert not errors, errors
    assert time.monotonic() - started < 8
    assert _written(tmp_path / "r.db") == 375
    for fn in fns:
        fn.teardown()
