"""A local file is read as planning listed it, or not at all: replaced (larger, smaller,
or the same size written again), rewritten while a chunk is read or deleted after
planning, every format's chunks yield no record of it, only dead letters saying it
changed since planning; an unchanged file reads exactly as chunks without a plan do."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from pathlib import Path

import pytest

from landing.chunks import Chunk, plan_chunks
from landing.formats import Rejection, number_chunks, read_chunk
from landing.samples import make_docs, write_tranche
from landing.tranches import plan_tranches

DAY = dt.date(2026, 1, 1)
FORMATS = ("jsonl", "jsonl.gz", "csv", "parquet")
CHANGES = ("larger", "smaller", "same size, new mtime")


def _planned_chunks(root: Path, fmt: str, n: int) -> tuple[str, list[Chunk]]:
    """One file of ``n`` documents, planned in small chunks (byte and row ranges)."""
    path = write_tranche(str(root), DAY.isoformat(), list(make_docs(n, seed=1, prefix="old")),
                         fmt)
    chunks = plan_chunks(plan_tranches(str(root), [DAY]), 2000, chunk_rows=10)
    assert {c.path for c in chunks} == {path}
    return path, chunks


def _read(chunks: list[Chunk]) -> list[tuple[object, int]]:
    """Every item of a file's chunks, numbered first, as a run reads them."""
    return [item for chunk in number_chunks(chunks) for item in read_chunk(chunk)]


def _replace(path: str, fmt: str, change: str, n: int) -> None:
    stat = os.stat(path)
    if change == "same size, new mtime":
        data = Path(path).read_bytes()
        Path(path).write_bytes(data)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
        return
    count = n * 3 // 2 if change == "larger" else n // 2
    new = write_tranche(str(Path(path).parents[1]), DAY.isoformat(),
                        list(make_docs(count, seed=2, prefix="new")), fmt)
    assert new == path and (os.path.getsize(path) > stat.st_size) == (change == "larger")


@pytest.mark.parametrize("change", CHANGES)
@pytest.mark.parametrize("fmt", FORMATS)
def test_a_file_replaced_after_planning_yields_no_record_only_its_dead_letter(
        tmp_path: Path, fmt: str, change: str) -> None:
    path, chunks = _planned_chunks(tmp_path, fmt, 60)
    assert len(chunks) > 1 or fmt in ("jsonl.gz", "csv")  # read whole
    _replace(path, fmt, change, 60)
    items = _read(chunks)
    assert items and all(isinstance(item, Rejection) for item, _ in items), items[:3]
    for item, _ in items:
        assert item.reason.startswith(  # type: ignore[union-attr]
            f"unreadable {fmt} file: {path}"), item
        assert "InputChanged: changed since planning: listed at planning with" in (
            item.reason), item  # type: ignore[union-attr]
    # a JSONL file cannot be numbered: its chunks are read as one; row ranges fail apiece
    assert len(items) == (len(chunks) if fmt == "parquet" else 1)
    assert sorted(p for _, p in items) == sorted({p for _, p in items})


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_unchanged_file_reads_exactly_as_without_a_plan(tmp_path: Path, fmt: str) -> None:
    _, chunks = _planned_chunks(tmp_path, fmt, 60)
    assert all(c.planned is not None for c in chunks)
    unplanned = [dataclasses.replace(c, planned=None) for c in chunks]
    items = _read(chunks)
    assert items == _read(unplanned)
    assert len(items) == 60 and not any(isinstance(i, Rejection) for i, _ in items)


def test_a_file_rewritten_while_its_chunk_is_read_ends_in_a_dead_letter(
        tmp_path: Path) -> None:
    """Rewritten in place after the open (what ``cp`` does): the chunk's last item says
    the file changed while it was read, and nothing read after the change is passed on."""
    path, chunks = _planned_chunks(tmp_path, "jsonl", 60)
    [whole] = [dataclasses.replace(chunks[0], end=-1)]
    items = read_chunk(whole, batch_size=8)
    first = next(items)
    assert not isinstance(first[0], Rejection)
    with open(path, "r+b") as fh:  # the same file, rewritten
        fh.truncate(0)
        fh.write(b"".join(b'{"id": "x%d", "text": "t"}\n' % i for i in range(5)))
    rest = list(items)
    item, position = rest[-1]
    assert isinstance(item, Rejection) and "InputChanged: changed while it was read" in (
        item.reason), rest[-3:]
    assert position == 0
    assert not any(isinstance(i, dict) and i["id"].startswith("x") for i, _ in rest)


@pytest.mark.parametrize("batch", [1, 7, 50, 4096])
def test_records_read_after_a_change_in_place_are_never_passed_on(
        tmp_path: Path, batch: int) -> None:
    """An export rewrites the file in place with the same size while it is read: every
    record passed on was read before the change (all old), the rest is one dead letter
    from the first record not passed on."""
    lines = [b'{"id": "old%05d", "text": "printer"}\n' % i for i in range(500)]
    folder = tmp_path / f"dt={DAY.isoformat()}"
    folder.mkdir()
    path = folder / "a.jsonl"
    path.write_bytes(b"".join(lines))
    [chunk] = plan_chunks(plan_tranches(str(tmp_path), [DAY]), 1 << 20)
    records: list[str] = []
    rejections = []
    for item, position in read_chunk(chunk, batch_size=batch):
        if isinstance(item, Rejection):
            assert item.changed and item.unread == 0  # rescored, not lost
            rejections.append((item.reason, position))
            continue
        records.append(item["id"])
        if len(records) == 10:
            stat = os.stat(path)
            path.write_bytes(b"".join(line.replace(b"old", b"NEW") for line in lines))
            os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert records and all(r.startswith("old") for r in records)
    if len(records) == 500:  # one batch: all of it was read, and checked, before
        assert rejections == [] and batch >= 500
        return
    [(reason, position)] = rejections
    assert "changed while it was read" in reason and position == 0
    assert f"after line {len(records)}:" in reason


def test_a_change_seen_at_the_end_of_a_later_chunk_is_a_dead_letter_within_it(
        tmp_path: Path) -> None:
    """Chunk 2 of 3 is read, the file is touched before chunk 2 ends, then chunk 3 is
    read: each chunk's dead letter starts within its own lines, so no two share a key."""
    lines = [b'{"id": "i%05d", "text": "printer"}\n' % i for i in range(3000)]
    folder = tmp_path / f"dt={DAY.isoformat()}"
    folder.mkdir()
    path = folder / "a.jsonl"
    path.write_bytes(b"".join(lines))
    chunks = sorted(number_chunks(plan_chunks(plan_tranches(str(tmp_path), [DAY]),
                                              len(b"".join(lines)) // 3 + 1)),
                    key=lambda c: c.start)
    assert len(chunks) == 3
    positions = []
    for k, chunk in enumerate(chunks[1:], 1):
        n = 0
        for item, position in read_chunk(chunk, batch_size=64):
            if isinstance(item, Rejection):
                positions.append(position)
                continue
            n += 1
            if k == 1 and n == 100:
                os.utime(path, (os.stat(path).st_atime, os.stat(path).st_mtime + 9))
        first_line, next_first = chunk.lines_before + 1, (
            chunks[k + 1].lines_before + 1 if k + 1 < len(chunks) else 3001)
        assert first_line <= positions[-1] < next_first
    assert len(positions) == len(set(positions)) == 2


def test_a_file_deleted_after_planning_is_one_dead_letter_saying_so(tmp_path: Path) -> None:
    path, chunks = _planned_chunks(tmp_path, "jsonl", 60)
    os.unlink(path)
    [(item, position)] = _read(chunks)
    assert position == 0 and item.reason.startswith(  # type: ignore[union-attr]
        f"unreadable jsonl file: {path}: InputChanged: deleted since planning")


def test_a_csv_file_parsed_twice_reads_as_without_a_plan(tmp_path: Path) -> None:
    """An unclosed quote makes the CSV reader open the file again for its tracked parse;
    the first open, closed by then, is checked too and is unchanged."""
    rows = [f'q{i:03d},"text, of row {i}",billing\n' for i in range(1, 52)]
    rows[20] = 'q021,"this quote is never closed,billing\n'
    (tmp_path / f"dt={DAY}").mkdir()
    (tmp_path / f"dt={DAY}" / "rows.csv").write_text("id,text,label\n" + "".join(rows))
    chunks = plan_chunks(plan_tranches(str(tmp_path), [DAY]), 1 << 20)
    items = _read(chunks)
    assert items == _read([dataclasses.replace(c, planned=None) for c in chunks])
    assert [p for i, p in items if isinstance(i, Rejection)] == [21]


def test_a_file_dated_at_the_epoch_is_checked_by_its_time_too(tmp_path: Path) -> None:
    """A file whose modification time is 0 (an archive extracted with ``--mtime=@0``, a
    reproducible build) is planned with that time, so the same bytes' size written again
    later is seen as a change."""
    path = write_tranche(str(tmp_path), DAY.isoformat(),
                         list(make_docs(20, seed=1, prefix="old")), "jsonl")
    os.utime(path, (0, 0))
    [plan] = plan_tranches(str(tmp_path), [DAY])
    assert plan.files[0].fingerprint == "0.0"
    chunks = plan_chunks([plan], 2000, chunk_rows=10)
    data = Path(path).read_bytes()
    Path(path).write_bytes(data.replace(b"old-", b"new-"))  # same size, now dated
    items = _read(chunks)
    assert items and all(isinstance(item, Rejection) for item, _ in items), items[:3]
