"""Hostile files: every one is scored or dead-lettered record by record, read = scored +
dead-lettered, and no traceback (SQLite, and PostgreSQL for NUL characters)."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from landing.samples import make_docs, write_tranche
from store.database import connect, from_json
from tests.pipelines.helpers import run_cli, with_model

DAY = "2026-07-01"
REPO = Path(__file__).resolve().parents[2]
GOOD = 20  # good documents beside each hostile file


def _line(obj: Any) -> bytes:
    return json.dumps(obj).encode() + b"\n"


def _csv(text: str) -> bytes:
    return text.encode()


def _parquet(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


HOSTILE: dict[str, tuple[str, bytes, dict[str, int | None]]] = {
    # name: (file name, content, {"read": n, "scored": n}); None: not known in advance;
    # "unreadable": n files ending in one read dead letter at position 0 naming the file
    "malformed and truncated JSON lines": ("h.jsonl", b'{"id": "a", "text": "ok a"}\n'
                                           b'{"id": "b", "text": \n{"id": "c"\n[1, 2\n'
                                           b'{"id": "d", "text": "ok d"', {"read": 5, "scored": 1}),
    "truncated gzip": ("h.jsonl.gz", gzip.compress(b"".join(
        _line({"id": f"g{i}", "text": f"text {i}"}) for i in range(5000)))[:-2000],
        {"read": None, "scored": None, "unreadable": 1}),
    "invalid UTF-8": ("h.jsonl", b'{"id": "u1", "text": "caf\xe9"}\n\xff\xfe\xfd\n'
                      b'{"id": "u2", "text": "fine"}\n', {"read": 3, "scored": 1}),
    "NUL in text and in ids": ("h.jsonl", _line({"id": "n1", "text": "a\x00b"})
                               + _line({"id": "n\x002", "text": "id with NUL"})
                               + b'{"id": "n3", "text": "raw \x00 byte"}\n',
                               {"read": 3, "scored": 1}),
    "CSV with newlines, quotes and a BOM": ("h.csv", _csv(
        '\ufeffid,text\nc1,"two\nlines"\nc2,"a ""quoted"" word"\nc3,"unterminated\n'),
        {"read": 3, "scored": 2}),
    "header-only CSV": ("h.csv", b"id,text\n", {"read": 0, "scored": 0}),
    "empty file": ("h.jsonl", b"", {"read": 0, "scored": 0}),
    "deeply nested JSON": ("h.jsonl", b'{"id": "deep", "text": ' + b"[" * 10000
                           + b"]" * 10000 + b"}\n" + _line({"id": "z", "text": "fine"}),
                           {"read": 2, "scored": 1}),
    "ids that are numbers": ("h.jsonl", _line({"id": 7, "text": "numeric"})
                             + _line({"id": 7.5, "text": "float"}), {"read": 2, "scored": 0}),
    "lone surrogate escapes in JSON": ("h.jsonl", b"".join(map(_line, [
        {"id": "s1", "text": "", "note": "\ud800"}, {"id": "s\udc80", "text": "fine"},
        {"id": "s3", "text": "fine", "label": "bil\ud800"}, {"id": "s4", "text": "x \udfff"},
        {"id": "s5", "text": "fine", "k\ud800": "v"},
        {"id": "s6", "text": "an emoji \ud83d\ude00 is a pair"}])), {"read": 6, "scored": 1}),
    "CSV header with an undecodable byte": ("h.csv", b"id,text,lab\xe9l\nc1,,x\nc2,t,y\n",
                                            {"read": 2, "scored": 0}),
    "CSV with an undecodable byte in an unclosed quote": (
        "h.csv", b'id,text,label\nc1,fine,a\nc2,"caf\xe9 broken,billing\nc3,also fine,b\n',
        {"read": 3, "scored": 2}),
    "Parquet string that is not UTF-8": ("h.parquet", _parquet(pa.table({
        "id": [f"q{i}" for i in range(20)],
        "text": pa.array([b"bad \xff" if i == 6 else f"text {i}".encode() for i in range(20)],
                         pa.binary()).view(pa.string())})), {"read": 20, "scored": 19}),
}


def _write(root: Path, name: str, data: bytes) -> None:
    folder = root / f"dt={DAY}"
    write_tranche(str(root), DAY, list(make_docs(GOOD, seed=41, prefix="good")), "jsonl",
                  name="good")
    (folder / name).write_bytes(data)


def _check(result: Any, db_url: str, expected: dict[str, int | None]) -> None:
    assert result.rc in (0, 4), result.err
    assert "Traceback" not in result.err
    db = connect(db_url)
    [(counts,)] = db.execute("SELECT counts FROM runs")
    n_rows = db.execute("SELECT count(*) FROM predictions")[0][0]
    n_dead = db.execute("SELECT count(*) FROM dead_letters")[0][0]
    db.close()
    c = from_json(counts)["tranches"][DAY]
    assert c["valid"] == c["scored"] + c.get("dead_inference", 0)
    assert c["read"] == c["written"] + c["dead_lettered"] == n_rows + n_dead
    if expected.get("unreadable"):
        db = connect(db_url)
        whole = db.execute("SELECT reason FROM dead_letters WHERE position = 0 AND "
                           "stage = 'read'")
        db.close()
        assert len(whole) == expected["unreadable"], whole
        assert all(f"dt={DAY}/" in r and "unreadable" in r for (r,) in whole), whole
        assert c["scored"] == c["read"] - len(whole) > GOOD  # the lines before the break
    if expected["read"] is not None:
        assert (c["read"], c["scored"]) == (expected["read"] + GOOD, expected["scored"] + GOOD)


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_files_lose_nothing(registry_root: str, tmp_path: Path, case: str) -> None:
    name, data, expected = HOSTILE[case]
    root = tmp_path / "landing"
    _write(root, name, data)
    url = f"sqlite:///{tmp_path / 's.db'}"
    result = run_cli("score", "--date", DAY, "--input-root", str(root), "--registry",
                     registry_root, "--db", url, "--output-dir", str(tmp_path / "out"))
    _check(result, url, expected)


@pytest.mark.postgres
def test_nul_characters_reach_postgresql_as_dead_letters_not_errors(
        registry_root: str, tmp_path: Path, pg_url: str) -> None:
    name, data, expected = HOSTILE["NUL in text and in ids"]
    root = tmp_path / "landing"
    _write(root, name, data)
    result = run_cli("score", "--date", DAY, "--input-root", str(root), "--registry",
                     registry_root, "--db", pg_url, "--output-dir", str(tmp_path / "out"))
    _check(result, pg_url, expected)
    db = connect(pg_url)
    reasons = {r[0] for r in db.execute("SELECT reason FROM dead_letters")}
    db.close()
    assert "id contains a NUL character" in reasons


@pytest.mark.parametrize("table, read, reason", [
    (pa.table({"key": ["p1", "p2", "p3"], "body": ["wrong", "columns", "here"]}), 1,
     "unreadable parquet file: {path}: ValueError: the Parquet schema has no column 'id', "
     "'text' (columns: key, body)"),
    (pa.table({"id": ["p1", "p2"], "text": [1, 2]}), 2, "text is not a string"),
])
def test_parquet_with_the_wrong_schema_or_column_types_loses_nothing(
        registry_root: str, tmp_path: Path, table: pa.Table, read: int, reason: str) -> None:
    """A file without the id or text column is one read dead letter at position 0 naming
    the file and what is missing; a text column of integers fails validation row by row."""
    root = tmp_path / "landing"
    folder = root / f"dt={DAY}"
    folder.mkdir(parents=True)
    pq.write_table(table, folder / "p.parquet")
    write_tranche(str(root), DAY, list(make_docs(GOOD, seed=42, prefix="good")), "jsonl")
    url = f"sqlite:///{tmp_path / 's.db'}"
    result = run_cli("score", "--date", DAY, "--input-root", str(root), "--registry",
                     registry_root, "--db", url, "--output-dir", str(tmp_path / "out"),
                     "--max-dead-letter-ratio", "0.5")
    _check(result, url, {"read": read, "scored": 0})
    db = connect(url)
    assert {r[0] for r in db.execute("SELECT reason FROM dead_letters")} == {
        reason.format(path=folder / "p.parquet")}
    db.close()


def test_an_empty_tranche_folder_is_missing(registry_root: str, tmp_path: Path) -> None:
    (tmp_path / "landing" / f"dt={DAY}").mkdir(parents=True)
    result = run_cli("score", "--date", DAY, "--input-root", str(tmp_path / "landing"),
                     "--registry", registry_root, "--db", f"sqlite:///{tmp_path / 's.db'}")
    assert result.rc == 3 and "is empty" in result.out


EXTRA_RSS_MIB = 100  # a 20 MB document may be held a few times, never more


def _peak_rss_mib(root: Path, registry: str, tmp: Path, name: str) -> float:
    """Peak RSS of one ``beamscore score`` run in its own process (1 worker, in-process)."""
    code = ("import resource, sys; from pipelines.cli import main; rc = main(sys.argv[1:]); "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr); "
            "sys.exit(rc)")
    proc = subprocess.run(
        [sys.executable, "-c", code, *with_model([
            "score", "--date", DAY, "--input-root", str(root), "--registry", registry,
            "--db", f"sqlite:///{tmp / name}.db", "--output-dir", str(tmp / f"out-{name}"),
            "--max-dead-letter-ratio", "0.5"])],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return int(proc.stderr.strip().splitlines()[-1]) / 1024


@pytest.mark.slow
def test_a_20_mb_document_is_dead_lettered_with_memory_bounded(
        registry_root: str, tmp_path: Path) -> None:
    """One 20 MB text among normal documents: one dead letter (its line is longer than
    the bound max_text_chars sets, so it is never read into memory), and the run's
    peak RSS at most EXTRA_RSS_MIB above the same run without it."""
    plain, root = tmp_path / "plain", tmp_path / "landing"
    _write(plain, "small.jsonl", _line({"id": "small", "text": "a normal document"}))
    _write(root, "big.jsonl", _line({"id": "huge", "text": "word " * (4 << 20)}))
    base = _peak_rss_mib(plain, registry_root, tmp_path, "plain")
    peak = _peak_rss_mib(root, registry_root, tmp_path, "big")
    print(f"peak RSS: {peak:.0f} MiB with a 20 MB document, {base:.0f} MiB without")
    assert peak - base < EXTRA_RSS_MIB
    url = f"sqlite:///{tmp_path / 'big.db'}"
    db = connect(url)
    [(reason, payload)] = db.execute("SELECT reason, payload FROM dead_letters")
    db.close()
    # Over the read bound (6 x max_text_chars + 64 KiB): rejected unread, by file and line.
    assert reason.startswith(f"line too long: {root}/dt=") and " line 1: " in reason
    assert "validation.max_text_chars" in reason
    assert len(payload or "") <= 2000 + len("…[truncated]")


def test_file_names_that_are_not_utf8_or_hold_a_newline_stop_nothing(
        registry_root: str, tmp_path: Path) -> None:
    """A file named in another encoding is refused, one dead letter showing its name with
    the byte escaped; a file whose name holds a newline is read, its bad record's dead
    letter names it whole in the table and in the dead-letter file."""
    root = tmp_path / "landing"
    _write(root, "x\ny.jsonl", _line({"id": "nl1", "text": "fine"}) + b"{broken\n")
    folder = os.fsencode(root / f"dt={DAY}")
    with open(os.path.join(folder, b"caf\xe9.jsonl"), "wb") as fh:
        fh.write(_line({"id": "e1", "text": "never read"}))
    url = f"sqlite:///{tmp_path / 's.db'}"
    for command in ("plan", "score"):
        result = run_cli(command, "--date", DAY, "--input-root", str(root), "--registry",
                         registry_root, "--db", url, "--output-dir", str(tmp_path / "out"))
        assert result.rc in (0, 4) and "Traceback" not in result.err, result.err
    assert "refused 1 file(s)" in result.out
    _check(result, url, {"read": 3, "scored": 1})
    db = connect(url)
    dead = sorted(db.execute("SELECT source_file, position, reason FROM dead_letters"))
    db.close()
    here = f"{root}/dt={DAY}"
    assert [(f, p) for f, p, _ in dead] == [(f"{here}/caf\\xe9.jsonl", 0),
                                            (f"{here}/x\ny.jsonl", 2)]
    assert "not valid UTF-8" in dead[0][2] and "malformed JSON" in dead[1][2]
    lines = [json.loads(line) for f in (tmp_path / "out").rglob("dead_letters-*.jsonl")
             for line in f.read_text().splitlines()]
    assert sorted((d["source_file"], d["position"]) for d in lines) == [
        (f, p) for f, p, _ in dead]


def test_folders_named_with_glob_characters_are_taken_literally(
        registry_root: str, tmp_path: Path) -> None:
    """An input root, output directory and registry under ``runs[1]`` (a pattern to
    Beam's file matching, which also deletes by pattern): the tranche is found, the
    model too, and a rescore supersedes the earlier run's dead-letter file."""
    import shutil

    base = tmp_path / "runs[1]"
    root, out, registry = base / "landing", base / "out", base / "registry"
    shutil.copytree(registry_root, registry)
    _write(root, "h.jsonl", b"{broken\n")
    url = f"sqlite:///{tmp_path / 's.db'}"
    for _ in range(2):
        result = run_cli("score", "--date", DAY, "--input-root", str(root), "--registry",
                         str(registry), "--db", url, "--output-dir", str(out), "--force")
        assert result.rc == 0, result.err
        assert "Warning" not in result.err
    db = connect(url)
    [(counts,)] = db.execute("SELECT counts FROM runs ORDER BY started_at DESC LIMIT 1")
    db.close()
    assert from_json(counts)["tranches"][DAY]["read"] == GOOD + 1
    assert len(list((out / f"dt={DAY}").glob("dead_letters-*.jsonl"))) == 1


def test_an_unreadable_row_group_counts_its_rows_in_the_dead_letter_share(
        registry_root: str, tmp_path: Path) -> None:
    """Beside 1,000 good records, a Parquet file of 2,800 rows in row groups of 700 with
    one group's data corrupted: one dead letter stands for 700 rows never read. The
    share counts them (the row range is known), so the tranche fails the dead-letter
    ratio (exit 4) instead of passing with 1 in 3,101; the summary says so."""
    root = tmp_path / "landing"
    write_tranche(str(root), DAY, list(make_docs(1000, seed=7, prefix="good")), "jsonl")
    folder = root / f"dt={DAY}"
    path = folder / "b.parquet"
    pq.write_table(pa.Table.from_pylist(list(make_docs(2800, seed=8, prefix="pq"))), path,
                   row_group_size=700, compression="snappy")
    column = pq.ParquetFile(path).metadata.row_group(0).column(1)
    data = bytearray(path.read_bytes())
    at = column.data_page_offset + column.total_compressed_size // 3
    data[at:at + 64] = bytes(b ^ 0xFF for b in data[at:at + 64])
    path.write_bytes(bytes(data))
    db = tmp_path / "s.db"
    result = run_cli("score", "--date", DAY, "--input-root", str(root), "--registry",
                     registry_root, "--db", f"sqlite:///{db}", "--output-dir",
                     str(tmp_path / "out"))
    assert result.rc == 4, result.err
    conn = connect(f"sqlite:///{db}")
    try:
        [(counts,)] = conn.execute("SELECT counts FROM runs")
    finally:
        conn.close()
    summary = from_json(counts)
    tranche = summary["tranches"][DAY]
    assert (tranche["read"], tranche["dead_lettered"], tranche["unread_estimate"]) == (
        3101, 1, 699)
    assert summary["dead_letter_ratio"] == round(700 / 3800, 6)
    assert "and about 699 record(s) never read in unreadable file parts" in result.out
    assert f"{DAY:<12}{3101:>10}" in result.out and "  OVER RATIO" in result.out
    assert f"tranche(s) {DAY} left failed" in result.err
