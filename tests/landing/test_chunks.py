"""Cutting tranches into chunks: every line and row read exactly once, chunks balanced."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from landing.chunks import (
    CHUNKS_PER_WORKER,
    Chunk,
    balanced_chunks,
    balanced_tasks,
    plan_chunks,
    whole_file,
)
from landing.formats import Rejection, number_chunks, read_chunk
from landing.tranches import plan_tranches
from tests.data import day_folder, json_line, numbered_jsonl

DAY1 = dt.date(2026, 1, 1)


def test_plan_chunks_cuts_only_large_uncompressed_jsonl_into_contiguous_ranges(
        tmp_path: Path) -> None:
    folder = day_folder(tmp_path, DAY1)
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



def _read_chunks_directly(chunks: list[Chunk]) -> list[tuple[int, str]]:
    """(position, id or DEAD) of every item the chunks yield."""
    out = []
    for chunk in chunks:
        for item, position in read_chunk(chunk, batch_size=4):
            out.append((position, "DEAD" if isinstance(item, Rejection) else item["id"]))
    return out


def test_every_chunk_size_reads_each_line_exactly_once(tmp_path: Path) -> None:
    data, expected = numbered_jsonl(16)
    (day_folder(tmp_path, DAY1) / "a.jsonl").write_bytes(data)
    plans = plan_tranches(str(tmp_path), [DAY1])
    # Lines are at most ~40 bytes: sizes 3..63 put boundaries at every kind of offset.
    for chunk_bytes in [*range(3, 64), len(data) - 1, len(data), len(data) + 1]:
        chunks = plan_chunks(plans, chunk_bytes)
        got = _read_chunks_directly(chunks)
        assert sorted(got) == sorted(expected.items()), f"chunk_bytes={chunk_bytes}"
        numbered = number_chunks(chunks)
        assert all(c.lines_before >= 0 for c in numbered)
        assert _read_chunks_directly(numbered) == got, f"numbered, chunk_bytes={chunk_bytes}"


def _bytes_read() -> int:
    """Bytes this process has read through read(2) and the like so far."""
    with open("/proc/self/io") as fh:
        return int(next(line for line in fh if line.startswith("rchar:")).split()[1])


@pytest.mark.skipif(not os.path.exists("/proc/self/io"), reason="needs Linux /proc")
def test_numbered_chunks_read_the_file_about_twice_not_once_per_chunk(
        tmp_path: Path) -> None:
    """A chunk that counts the lines before it reads the file up to its start: a file cut
    in 16 reads about 8 times over (gigabytes from object storage, for a large file).
    Numbered (``number_chunks``, one pass), reading all its chunks reads it about twice."""
    line = json_line({"id": "x", "text": "w" * 90}) + b"\n"
    data = line * (16 * 1024 * 1024 // len(line))
    (day_folder(tmp_path, DAY1) / "a.jsonl").write_bytes(data)
    chunks = plan_chunks(plan_tranches(str(tmp_path), [DAY1]), len(data) // 16 + 1)
    assert len(chunks) == 16

    before = _bytes_read()
    plain = [p for c in chunks for _, p in read_chunk(c)]
    counting = _bytes_read() - before

    before = _bytes_read()
    numbered = [p for c in number_chunks(chunks) for _, p in read_chunk(c)]
    once = _bytes_read() - before

    assert numbered == plain == list(range(1, len(data) // len(line) + 1))
    assert counting > 7 * len(data)
    assert once < 2.2 * len(data)


def test_chunks_past_the_end_of_a_shrunken_file_stay_unnumbered(tmp_path: Path) -> None:
    """Chunks that do not carry their planned file (``planned`` None) read what the path
    holds; a planned file rewritten is one dead letter (tests/landing/test_planned.py)."""
    data, expected = numbered_jsonl(40)
    path = day_folder(tmp_path, DAY1) / "a.jsonl"
    path.write_bytes(data)
    chunks = [dataclasses.replace(c, planned=None)
              for c in plan_chunks(plan_tranches(str(tmp_path), [DAY1]), 50)]
    cut = len(data) // 2
    path.write_bytes(data[:cut])  # rewritten shorter after planning
    numbered = number_chunks(chunks)
    # numbered when the file still holds the byte before the chunk's start
    assert [c.lines_before >= 0 for c in numbered] == [c.start <= cut + 1 for c in chunks]
    assert _read_chunks_directly(numbered) == _read_chunks_directly(chunks)
    path.unlink()  # gone: read as one chunk, whose reader reports the file once
    (whole,) = number_chunks(chunks)
    assert (whole.path, whole.start, whole.end, whole.index) == (str(path), 0, -1, 0)
    assert whole.est_rows == sum(c.est_rows for c in chunks)
    ((item, position),) = read_chunk(whole)
    assert position == 0 and item.reason.startswith(  # type: ignore[union-attr]
        f"unreadable jsonl file: {path}: FileNotFoundError")


def test_parquet_row_ranges_read_each_row_exactly_once(tmp_path: Path) -> None:
    rows = [{"id": f"r{i}", "text": f"text {i}"} for i in range(103)]
    pq.write_table(pa.Table.from_pylist(rows), day_folder(tmp_path, DAY1) / "a.parquet",
                   row_group_size=40)
    plans = plan_tranches(str(tmp_path), [DAY1])
    expected = sorted((i + 1, f"r{i}") for i in range(103))
    # row groups of 40, 40 and 23 rows: each cut into at most 8 pieces (1, 7), kept
    # whole where they fit in a range (40, 41), put together where two fit (102)
    ranges = {1: 24, 7: 16, 40: 3, 41: 3, 102: 2, 103: 1}
    for chunk_rows, count in ranges.items():
        chunks = plan_chunks(plans, 1 << 20, chunk_rows=chunk_rows)
        assert len(chunks) == count, f"chunk_rows={chunk_rows}"
        assert sorted(_read_chunks_directly(chunks)) == expected, f"chunk_rows={chunk_rows}"


def test_a_parquet_row_range_decodes_only_its_row_groups(tmp_path: Path,
                                                         monkeypatch: Any) -> None:
    path = day_folder(tmp_path, DAY1) / "a.parquet"
    sizes = [30, 5, 50, 1, 40]  # row groups of uneven sizes: 126 rows
    with pq.ParquetWriter(path, pa.schema([("id", pa.string()), ("text", pa.string())])) as w:
        at = 0
        for n in sizes:
            w.write_table(pa.Table.from_pylist(
                [{"id": f"r{i}", "text": f"text {i}"} for i in range(at, at + n)]))
            at += n
    decoded: list[list[int]] = []
    iter_batches = pq.ParquetFile.iter_batches

    def spy(self: Any, *args: Any, row_groups: Any = None, **kwargs: Any) -> Any:
        decoded.append(list(row_groups))
        return iter_batches(self, *args, row_groups=row_groups, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", spy)
    plans = plan_tranches(str(tmp_path), [DAY1])
    starts = [sum(sizes[:i]) for i in range(len(sizes) + 1)]  # 0 30 35 85 86 126
    for chunk_rows in (1, 4, 30, 36, 126):
        decoded.clear()
        chunks = plan_chunks(plans, 1 << 20, chunk_rows=chunk_rows)
        got = _read_chunks_directly(chunks)
        assert sorted(got) == [(i + 1, f"r{i}") for i in range(126)], chunk_rows
        for chunk, groups in zip(chunks, decoded):
            end = chunk.end if chunk.end >= 0 else 126
            assert groups == [g for g in range(len(sizes))
                              if starts[g] < end and starts[g + 1] > chunk.start], chunk


def test_balanced_chunks_have_similar_rows_largest_first(tmp_path: Path) -> None:
    folder = day_folder(tmp_path, DAY1)
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



def test_small_whole_files_are_packed_per_tranche_into_tasks_of_about_the_target(
        tmp_path: Path) -> None:
    """A tranche's small files read whole are packed, in path order, into tasks of about
    the chunk target in rows and of at most the run's small files over 8 per worker, or
    100 (empty files too); a file cut into ranges keeps a task per range; no task spans
    tranches; every chunk is in one task, the tasks largest first, the same for the same
    plan."""
    day2 = dt.date(2026, 1, 2)
    for day, n_files in ((DAY1, 900), (day2, 30)):
        folder = day_folder(tmp_path, day)
        for i in range(n_files):
            rows = i % 4  # 0 to 3 records: empty files too
            (folder / f"f{i:04d}.jsonl").write_bytes(b"".join(
                json_line({"id": f"{day}-{i}-{j}", "text": "t"}) + b"\n" for j in range(rows)))
    lines = [json.dumps({"id": f"big{i}", "text": "y" * 200}) for i in range(12_000)]
    (day_folder(tmp_path, DAY1) / "big.jsonl").write_text("\n".join(lines) + "\n")
    plans = plan_tranches(str(tmp_path), [DAY1, day2])
    chunks = balanced_chunks(plans, 64 << 20, workers=1)
    target = max(1000, sum(c.est_rows for c in chunks) // CHUNKS_PER_WORKER)
    tasks = balanced_tasks(plans, 64 << 20, workers=1)
    assert tasks == balanced_tasks(plans, 64 << 20, workers=1)
    assert sorted((c.path, c.start) for t in tasks for c in t.chunks) == sorted(
        (c.path, c.start) for c in chunks)
    assert [t.est_rows for t in tasks] == sorted((t.est_rows for t in tasks), reverse=True)
    assert all({c.tranche for c in t.chunks} == {t.tranche} for t in tasks)
    big = [t for t in tasks if any("big" in c.path for c in t.chunks)]
    assert len(big) > 1 and all(len(t.chunks) == 1 for t in big)  # one task per byte range
    packed = [t for t in tasks if t not in big]
    assert all(whole_file(c) for t in packed for c in t.chunks)
    max_files = -(-930 // CHUNKS_PER_WORKER)  # 117 of the 930 small files a task at most
    for t in packed:
        assert [c.path for c in t.chunks] == sorted(c.path for c in t.chunks)
        assert sum(c.est_rows for c in t.chunks[:-1]) < target
        assert len(t.chunks) <= max_files
    assert len([t for t in packed if t.tranche == DAY1.isoformat()]) == -(-900 // max_files)
    assert len([t for t in packed if t.tranche == day2.isoformat()]) == 1
    assert len({t.key for t in tasks}) == len(tasks)
    # at 2 workers, a tranche of 1,500 files of 10 rows: tasks of about 1,000 rows
    folder = day_folder(tmp_path / "many", DAY1)
    for i in range(1500):
        (folder / f"p{i:04d}.jsonl").write_bytes(b"".join(
            json_line({"id": f"{i}-{j}", "text": "t" * 20}) + b"\n" for j in range(10)))
    many = balanced_tasks(plan_tranches(str(tmp_path / "many"), [DAY1]), 64 << 20, workers=2)
    assert [len(t.chunks) for t in many] == [100] * 15  # 1,000 rows (1,500 / 16 is 94)


def test_many_small_line_files_are_estimated_from_a_spread_sample(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Of 100 small JSONL files of a tranche, 16 are sampled (one request or two each in
    Cloud Storage) and the rest estimated by their bytes per line; every estimate is
    within a line or two of the truth here (same line lengths), and a second estimate of
    the same file versions samples nothing."""
    import landing.chunks as chunks_module
    import landing.sampling as sampling
    from landing.chunks import SAMPLED_SMALL_FILES, estimate_rows

    folder = day_folder(tmp_path, DAY1)
    for i in range(100):
        (folder / f"part-{i:03d}.jsonl").write_bytes(b"".join(
            json_line({"id": f"{i:03d}-{k}", "text": "x" * 40}) + b"\n"
            for k in range(i % 7 + 1)))
    (folder / "other.csv").write_text("id,text\n1,a\n")
    sampled: list[str] = []
    lines = sampling._lines
    monkeypatch.setattr(sampling, "_lines",
                        lambda path, size, gz: sampled.append(path) or lines(path, size, gz))
    chunks_module._estimate_version.cache_clear()
    plans = plan_tranches(str(tmp_path), [DAY1])
    est = estimate_rows(plans)
    assert len(sampled) == SAMPLED_SMALL_FILES + 1  # and the one CSV file
    for i in range(100):
        assert abs(est[str(folder / f"part-{i:03d}.jsonl")].rows - (i % 7 + 1)) <= 1
    assert estimate_rows(plans) == est and len(sampled) == SAMPLED_SMALL_FILES + 1
