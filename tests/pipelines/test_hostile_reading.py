"""Issue 18's reading rows through ``beamscore score`` with a real database: an unclosed
CSV quote, a long quoted field holding row-shaped lines, a gzip bomb on one line, a file
without newline, a device and a FIFO among the files of a tranche. Each costs only its
own row or file, named in a read dead letter; the rest of the tranche is scored, and
memory stays bounded (peak RSS of the whole process tree)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from landing.samples import make_docs, write_tranche
from store.database import connect, from_json
from tests.pipelines.helpers import run_cli

DAY = "2026-07-02"
REPO = Path(__file__).resolve().parents[2]
GOOD = 20  # good JSONL documents beside each hostile file
BEAMSCORE = str(Path(sys.executable).with_name("beamscore"))


def _tranche(root: Path) -> Path:
    folder = root / f"dt={DAY}"
    write_tranche(str(root), DAY, list(make_docs(GOOD, seed=43, prefix="good")), "jsonl",
                  name="good")
    return folder


def _score(root: Path, registry: str, url: str, tmp: Path) -> Any:
    return run_cli("score", "--date", DAY, "--input-root", str(root), "--registry", registry,
                   "--db", url, "--output-dir", str(tmp / "out"), "--max-dead-letter-ratio",
                   "0.5")


def _outcome(url: str) -> tuple[dict[str, int], list[tuple[str, int]], list[tuple[Any, ...]]]:
    """The tranche's counts, its predictions (doc_id, position) and its dead letters
    (source file, position, stage, reason)."""
    db = connect(url)
    try:
        [(counts,)] = db.execute("SELECT counts FROM runs")
        scored = db.execute("SELECT doc_id, position FROM predictions ORDER BY doc_id")
        dead = db.execute("SELECT source_file, position, stage, reason FROM dead_letters "
                          "ORDER BY source_file, position")
    finally:
        db.close()
    return from_json(counts)["tranches"][DAY], [tuple(r) for r in scored], \
        [tuple(r) for r in dead]


def test_an_unclosed_quote_in_row_101_costs_only_that_row(
        registry_root: str, tmp_path: Path, db_url: str) -> None:
    """251 rows, row 101 opens a quote it never closes: that row is one dead letter
    naming its line, the 150 rows after it are scored and read counts every row."""
    root = tmp_path / "landing"
    folder = _tranche(root)
    rows = [f'q{i:03d},"text, of row {i}",billing\n' for i in range(1, 252)]
    rows[100] = 'q101,"this quote is never closed,billing\n'
    (folder / "rows.csv").write_text("id,text,label\n" + "".join(rows))
    result = _score(root, registry_root, db_url, tmp_path)
    assert result.rc == 0, result.err
    counts, scored, dead = _outcome(db_url)
    assert counts["read"] == 251 + GOOD and counts["scored"] == 250 + GOOD
    assert [(Path(f).name, p, s, r.split(":")[0] + ":" + r.split(":")[1])
            for f, p, s, r in dead] == [("rows.csv", 101, "read", "malformed CSV row: line 102")]
    assert {d for d, _ in scored} >= {f"q{i:03d}" for i in range(102, 252)}


def test_a_missing_value_and_a_nan_are_told_apart_in_every_format(
        registry_root: str, tmp_path: Path, db_url: str) -> None:
    """An absent key and a null are "missing" (a CSV cell is text: empty); a NaN is a value, a
    number (JSON's ``NaN``, a float Parquet column's): "not a string". The same record
    gets the same reason whichever format carried it."""
    root = tmp_path / "landing"
    folder = _tranche(root)
    (folder / "nan.jsonl").write_text('{"id": NaN, "text": "a text"}\n'
                                      '{"id": null, "text": "a text"}\n'
                                      '{"id": "j3", "text": NaN}\n'
                                      '{"id": "j4"}\n')
    pq.write_table(pa.table({"id": pa.array([float("nan"), None], pa.float64()),
                             "text": ["a text", "a text"]}), folder / "floats.parquet")
    pq.write_table(pa.table({"id": ["p1", "p2"], "text": pa.array([float("nan"), None])}),
                   folder / "texts.parquet")
    (folder / "cells.csv").write_text("id,text\n,a text\nc2,\n")
    result = _score(root, registry_root, db_url, tmp_path)
    assert result.rc == 0, result.err
    counts, _, dead = _outcome(db_url)
    assert counts["read"] == GOOD + 10 and counts["scored"] == GOOD
    assert [(Path(f).name, p, s, r) for f, p, s, r in dead] == [
        ("cells.csv", 1, "validate", "empty id"),
        ("cells.csv", 2, "validate", "empty text"),
        ("floats.parquet", 1, "validate", "id is not a string"),
        ("floats.parquet", 2, "validate", "missing id"),
        ("nan.jsonl", 1, "validate", "id is not a string"),
        ("nan.jsonl", 2, "validate", "missing id"),
        ("nan.jsonl", 3, "validate", "text is not a string"),
        ("nan.jsonl", 4, "validate", "missing text"),
        ("texts.parquet", 1, "validate", "text is not a string"),
        ("texts.parquet", 2, "validate", "missing text"),
    ]


def test_a_long_quoted_field_never_becomes_rows(
        registry_root: str, tmp_path: Path, db_url: str) -> None:
    """A 140,000-character quoted field whose text holds lines shaped like rows is one
    record, dead-lettered by validation.max_text_chars; the real victim-doc is scored."""
    root = tmp_path / "landing"
    folder = _tranche(root)
    inner = "\n".join(["victim-doc,an invented text,billing"] * 3)
    text = "x" * 140_000 + "\n" + inner + "\n" + "y" * 100
    (folder / "long.csv").write_text(f'id,text,label\nreal-1,hello there,billing\n'
                                     f'long-doc,"{text}",billing\n'
                                     f'victim-doc,the real one,returns\n')
    result = _score(root, registry_root, db_url, tmp_path)
    assert result.rc == 0, result.err
    counts, scored, dead = _outcome(db_url)
    assert counts["read"] == 3 + GOOD and counts["scored"] == 2 + GOOD
    assert ("victim-doc", 3) in scored and ("real-1", 1) in scored
    assert [(Path(f).name, p, s) for f, p, s, _ in dead] == [("long.csv", 2, "validate")]


def test_a_file_without_newline_a_device_and_a_fifo_cost_only_themselves(
        registry_root: str, tmp_path: Path, db_url: str) -> None:
    """A 64 MB .jsonl without a newline and a .csv linked to /dev/zero are one read dead
    letter each, naming them; a FIFO named .jsonl is never opened: the run lists it as
    never scored, not a regular file. The rest of the tranche is scored."""
    root = tmp_path / "landing"
    folder = _tranche(root)
    with (folder / "noline.jsonl").open("wb") as fh:
        fh.write(b'{"id": "endless", "text": "')
        for _ in range(64):
            fh.write(b"a" * (1 << 20))
    (folder / "zero.csv").symlink_to("/dev/zero")
    os.mkfifo(folder / "pipe.jsonl")
    result = _score(root, registry_root, db_url, tmp_path)
    assert result.rc == 0, result.err
    counts, scored, dead = _outcome(db_url)
    assert counts["scored"] == GOOD and len(scored) == GOOD
    assert counts["read"] == GOOD + 2, (counts, dead)
    by_file = {Path(f).name: (p, s, r) for f, p, s, r in dead}
    assert set(by_file) == {"noline.jsonl", "zero.csv"}
    assert by_file["noline.jsonl"][:2] == (1, "read")
    assert by_file["noline.jsonl"][2].startswith(f"line too long: {folder / 'noline.jsonl'}")
    position, stage, reason = by_file["zero.csv"]
    assert (position, stage) == (0, "read") and str(folder / "zero.csv") in reason
    assert "not followed" in reason
    assert "unscored: 1 entry under input_root" in result.out
    plan = run_cli("plan", "--date", DAY, "--input-root", str(root), "--registry",
                   registry_root, "--db", db_url)
    assert f"{folder / 'pipe.jsonl'}" in plan.out and "not a regular file" in plan.out


def _tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and all its descendants."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
        rss[int(entry)] = next((int(line.split()[1]) << 10 for line in status.splitlines()
                                if line.startswith("VmRSS:")), 0)
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        total += rss.get(p, 0)
        todo += children.get(p, [])
    return total


def peak_tree_rss_mib(root: Path, registry: str, tmp: Path, name: str) -> float:
    """Peak RSS (MiB) of the whole process tree of one ``beamscore score`` run, sampled
    every 20 ms."""
    proc = subprocess.Popen(
        [BEAMSCORE, "score", "--model", "demo", "--date", DAY, "--input-root", str(root),
         "--registry", registry, "--db", f"sqlite:///{tmp / name}.db", "--output-dir",
         str(tmp / f"out-{name}"), "--max-dead-letter-ratio", "0.5"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.extend(proc.communicate()))
    reader.start()
    while proc.poll() is None:
        peak = max(peak, _tree_rss(proc.pid))
        time.sleep(0.02)
    reader.join()
    assert proc.returncode == 0, out
    return peak / (1 << 20)


# What the bomb expands to (its one line is that long): 1 GiB, over 800 times the line
# bound; BEAMSCORE_TEST_BOMB_GIB=5 runs the 5 GiB case.
BOMB_GIB = int(os.environ.get("BEAMSCORE_TEST_BOMB_GIB", "1"))


def _bomb(path: Path) -> None:
    """A .jsonl.gz of a few MB whose first line expands to BOMB_GIB GiB."""
    pack = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = b"\0" * (16 << 20)
    with path.open("wb") as fh:
        fh.write(pack.compress(b'{"id": "bomb", "text": "'))
        for _ in range(BOMB_GIB * 64):
            fh.write(pack.compress(block))
        fh.write(pack.compress(b'"}\n{"id": "after-bomb", "text": "a normal document"}\n'))
        fh.write(pack.flush())


@pytest.mark.slow
def test_a_gzip_bomb_on_one_line_is_one_dead_letter_with_memory_bounded(
        registry_root: str, tmp_path: Path) -> None:
    """Planning and reading read a bounded number of bytes of the bomb's line: it is one
    dead letter naming the file, the line after it is scored, and the peak RSS of the
    run's whole process tree is within 256 MiB of the same run without the bomb."""
    plain, root = tmp_path / "plain", tmp_path / "landing"
    _tranche(plain)
    folder = _tranche(root)
    _bomb(folder / "bomb.jsonl.gz")
    assert (folder / "bomb.jsonl.gz").stat().st_size < 8 << 20
    base = peak_tree_rss_mib(plain, registry_root, tmp_path, "plain")
    peak = peak_tree_rss_mib(root, registry_root, tmp_path, "bomb")
    print(f"peak RSS of the process tree: {peak:.0f} MiB with the bomb, {base:.0f} without")
    assert peak - base < 256
    counts, scored, dead = _outcome(f"sqlite:///{tmp_path / 'bomb'}.db")
    assert counts["read"] == GOOD + 2 and ("after-bomb", 2) in scored
    [(source, position, stage, reason)] = dead
    assert (Path(source).name, position, stage) == ("bomb.jsonl.gz", 1, "read")
    assert reason.startswith(f"line too long: {folder / 'bomb.jsonl.gz'} line 1: ")
