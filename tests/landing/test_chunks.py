"""Cutting tranches into chunks: every line and row read exactly once, chunks balanced."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from landing.chunks import Chunk, balanced_chunks, plan_chunks
from landing.formats import Rejection, read_chunk
from landing.tranches import plan_tranches
from tests.data import day_folder, numbered_jsonl

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
        got = _read_chunks_directly(plan_chunks(plans, chunk_bytes))
        assert sorted(got) == sorted(expected.items()), f"chunk_bytes={chunk_bytes}"


def test_parquet_row_ranges_read_each_row_exactly_once(tmp_path: Path) -> None:
    rows = [{"id": f"r{i}", "text": f"text {i}"} for i in range(103)]
    pq.write_table(pa.Table.from_pylist(rows), day_folder(tmp_path, DAY1) / "a.parquet",
                   row_group_size=40)
    plans = plan_tranches(str(tmp_path), [DAY1])
    expected = sorted((i + 1, f"r{i}") for i in range(103))
    for chunk_rows in (1, 7, 40, 41, 102, 103):
        chunks = plan_chunks(plans, 1 << 20, chunk_rows=chunk_rows)
        assert len(chunks) == -(-103 // chunk_rows)
        assert sorted(_read_chunks_directly(chunks)) == expected, f"chunk_rows={chunk_rows}"


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

