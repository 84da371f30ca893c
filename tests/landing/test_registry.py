"""The format registry: every supported-format list and every per-format decision is
derived from ``landing.formats.FORMATS``, so one new entry is a new input format."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from landing import formats, splitters
from landing.chunks import balanced_chunks, plan_chunks
from landing.formats import FORMATS, Format, describe_formats, file_format, format_names
from landing.reading import Chunk, Item, ReadOptions, open_input
from landing.splitters import Extent
from landing.tranches import plan_tranches
from tests.data import day_folder

DAY1 = dt.date(2026, 1, 1)
ROOT = Path(__file__).resolve().parents[2]


def test_descriptions_list_every_suffix_and_label() -> None:
    assert describe_formats() == "*.jsonl, *.ndjson, *.csv (each also .gz) or *.parquet"
    assert format_names() == "JSONL, CSV or Parquet"
    for f in FORMATS:
        assert f.label in format_names()
        for suffix in f.suffixes:
            assert f"*{suffix}" in describe_formats()
            assert file_format(f"x{suffix.upper()}") == f.name
            assert file_format(f"x{suffix}.gz") == (f"{f.name}.gz" if f.gzip else None)


def _toy_read(chunk: Chunk, gzipped: bool, _opts: ReadOptions) -> Iterator[Item]:
    """A toy format: ``id=text`` pairs separated by ``;``."""
    with open_input(chunk.path, gzipped) as fh:
        for n, pair in enumerate(fh.read().decode().split(";"), start=1):
            doc_id, _, text = pair.partition("=")
            yield {"id": doc_id, "text": text}, n


TOY = Format("toy", "Toy", (".toy",), _toy_read, splitters.whole,
             lambda path, size, gz: Extent(size // 4), unit="pair", gzip=True)


@pytest.fixture
def with_toy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(formats, "FORMATS", (*FORMATS, TOY))


@pytest.mark.usefixtures("with_toy")
def test_one_new_entry_is_planned_chunked_read_and_described(tmp_path: Path) -> None:
    import gzip

    folder = day_folder(tmp_path, DAY1)
    (folder / "a.toy").write_bytes(b"t1=one;t2=two")
    (folder / "b.TOY.gz").write_bytes(gzip.compress(b"t3=three"))
    [plan] = plan_tranches(str(tmp_path), [DAY1])
    assert {os.path.basename(f.path): f.format for f in plan.files} == {
        "a.toy": "toy", "b.TOY.gz": "toy.gz"}
    assert not plan.ignored
    chunks = balanced_chunks([plan], 1 << 20, workers=1)
    assert {(os.path.basename(c.path), c.est_rows) for c in chunks} == {("a.toy", 3),
                                                                       ("b.TOY.gz", 7)}
    read = [(item["id"], pos) for c in plan_chunks([plan], 1 << 20)
            for item, pos in formats.read_chunk(c) if isinstance(item, dict)]
    assert sorted(read) == [("t1", 1), ("t2", 2), ("t3", 1)]
    assert "*.toy" in describe_formats() and format_names().endswith("or Toy")


@pytest.mark.usefixtures("with_toy")
def test_an_unreadable_file_of_a_new_format_names_its_unit(tmp_path: Path) -> None:
    path = tmp_path / "bad.toy.gz"
    path.write_bytes(b"not gzip")
    [(item, position)] = list(formats.read_chunk(Chunk("t", str(path), "toy.gz")))
    assert position == 0
    assert item.reason.startswith(f"unreadable toy.gz file: {path}: ")  # type: ignore[union-attr]


def test_no_format_is_named_outside_the_registry() -> None:
    """No ``.format ==`` branch and no hard-coded suffix list outside landing/formats."""
    out = subprocess.run(
        ["git", "grep", "--untracked", "-nE", r"\.format ?(==|!=| in )|\.ndjson|\.parquet\b.*\.csv",
         "--", "*.py", ":!tests/*", ":!landing/format*.py"],
        cwd=ROOT, capture_output=True, text=True, check=False)
    assert out.stdout == "", out.stdout
