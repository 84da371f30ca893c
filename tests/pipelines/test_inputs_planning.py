"""What lands under the input root is scored, dead-lettered or named: a symlink out of
the root is one dead letter holding none of its target, entries never scored are listed
with why, and a tranche of files without records is ``empty`` (exit 3) unless
``allow_empty_tranches`` (issue 18)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from landing.chunks import Chunk, ReadTask
from landing.samples import make_docs, write_tranche
from landing.tranches import TranchePlan
from pipelines.orchestration.plan import ScorePlan
from store.ledger import RUN, SKIP
from tests.data import query_rows
from tests.pipelines.helpers import run_cli

DAY, DAY2 = "2026-05-01", "2026-05-02"
SECRET = "s3cr3t-password-do-not-leak"


def _cli(command: str, root: Path, registry: str, db: str, tmp: Path, *extra: str) -> Any:
    return run_cli(command, "--input-root", str(root), "--registry", registry, "--db", db,
                   *(["--output-dir", str(tmp / "out")] if command == "score" else []),
                   "--max-dead-letter-ratio", "0.5", *extra)


def test_a_symlink_out_of_the_input_root_is_one_dead_letter_without_its_content(
        registry_root: str, tmp_path: Path, db_url: str) -> None:
    root = tmp_path / "landing"
    write_tranche(str(root), DAY, list(make_docs(20, seed=8, prefix="s")), "jsonl")
    secret = tmp_path / "secrets.jsonl"
    secret.write_text(json.dumps({"id": "secret", "text": SECRET}) + "\n" + SECRET + "\n")
    folder = root / f"dt={DAY}"
    os.symlink(secret, folder / "leak.jsonl")
    os.symlink("/etc/passwd", folder / "passwd.csv")
    inside = root / "shared.jsonl"  # a link inside input_root is followed
    inside.write_text(json.dumps({"id": "shared", "text": "shared text"}) + "\n")
    os.symlink(inside, folder / "shared.jsonl")
    result = _cli("score", root, registry_root, db_url, tmp_path, "--date", DAY)
    assert result.rc == 0, result.err
    dead = query_rows(db_url, "SELECT source_file, position, stage, reason, payload FROM "
                         "dead_letters ORDER BY source_file")
    assert [(Path(f).name, p, s) for f, p, s, _, _ in dead] == [
        ("leak.jsonl", 0, "read"), ("passwd.csv", 0, "read")]
    assert all("outside input_root" in r and Path(f).name in r and not pl
               for f, _, _, r, pl in dead)
    assert query_rows(db_url, "SELECT count(*) FROM predictions WHERE doc_id = 'shared'") == [(1,)]
    everything = json.dumps(query_rows(db_url, "SELECT * FROM dead_letters"), default=str)
    everything += json.dumps(query_rows(db_url, "SELECT * FROM predictions"), default=str)
    everything += "".join(f.read_text() for f in (tmp_path / "out").rglob("*.jsonl"))
    assert SECRET not in everything and "root:x:0" not in everything
    assert "refused 2 file(s)" in result.out and "MISMATCH" not in result.out


def test_a_tranche_folder_linked_out_of_the_input_root_is_not_read(
        registry_root: str, tmp_path: Path) -> None:
    """The folder itself is the link: every file in it resolves outside input_root, so
    each is one dead letter without its content."""
    root, outside = tmp_path / "landing", tmp_path / "elsewhere"
    write_tranche(str(outside), DAY, list(make_docs(5, seed=12, prefix="o")), "jsonl")
    root.mkdir()
    os.symlink(outside / f"dt={DAY}", root / f"dt={DAY}")
    url = f"sqlite:///{tmp_path / 'f.db'}"
    result = _cli("score", root, registry_root, url, tmp_path, "--date", DAY)
    dead = query_rows(url, "SELECT reason, payload FROM dead_letters")
    assert query_rows(url, "SELECT count(*) FROM predictions") == [(0,)]
    assert dead and all("outside input_root" in r and not pl for r, pl in dead), dead
    assert result.rc in (0, 4), result.err


def test_plan_lists_every_entry_never_scored_with_why_and_score_counts_them(
        registry_root: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "landing"
    write_tranche(str(root), DAY, list(make_docs(10, seed=9, prefix="u")), "jsonl")
    write_tranche(str(root), "2026-02-28", list(make_docs(5, seed=9, prefix="v")), "jsonl")
    bad_date = root / "dt=2026-02-30"
    bad_date.mkdir()
    (bad_date / "a.jsonl").write_text(json.dumps({"id": "x", "text": "never"}) + "\n")
    sub = root / f"dt={DAY}" / "sub"
    sub.mkdir()
    (sub / "b.jsonl").write_text(json.dumps({"id": "y", "text": "never"}) + "\n")
    (root / f"dt={DAY}" / "c.json").write_text("{}")
    (root / "stray.jsonl").write_text("{}\n")
    (root / "exports").mkdir()
    url = f"sqlite:///{tmp_path / 's.db'}"
    plan = _cli("plan", root, registry_root, url, tmp_path, "--date", DAY)
    assert plan.rc == 0, plan.err
    assert f"{bad_date}: 2026-02-30 is not a date" in plan.out
    assert f"{sub}: a subfolder: tranches are not read recursively" in plan.out
    assert "c.json: not *.jsonl" in plan.out
    assert f"{root / 'stray.jsonl'}: a file outside the tranche folders" in plan.out
    assert f"{root / 'exports'}: not a tranche folder" in plan.out
    assert "dt=2026-02-28" not in plan.out  # a tranche, scored when asked for
    assert "5 entries under input_root will never be scored" in plan.out
    result = _cli("score", root, registry_root, url, tmp_path, "--date", DAY)
    assert result.rc == 0, result.err
    assert "5 entries under input_root will never be scored" in result.out
    assert any("5 entries under input_root will never be scored" in r.getMessage()
               and r.levelname == "WARNING" for r in caplog.records)
    [(counts,)] = query_rows(url, "SELECT counts FROM runs")
    summary = json.loads(counts)
    assert len(summary["unscored"]) == 3
    assert [u["why"] for u in summary["plan"][DAY]["unscored"]] == [
        "not *.jsonl, *.ndjson, *.csv (each also .gz) or *.parquet",
        "a subfolder: tranches are not read recursively"]


@pytest.mark.parametrize("name, content", [("a.jsonl", b""), ("a.csv", b"id,text\n"),
                                           ("a.jsonl", b"\n\n")])
def test_a_tranche_of_files_without_records_is_empty_and_exits_3(
        registry_root: str, tmp_path: Path, name: str, content: bytes) -> None:
    root = tmp_path / "landing"
    write_tranche(str(root), DAY2, list(make_docs(10, seed=2, prefix="e")), "jsonl")
    (root / f"dt={DAY}").mkdir()
    (root / f"dt={DAY}" / name).write_bytes(content)
    url = f"sqlite:///{tmp_path / 's.db'}"
    plan = _cli("plan", root, registry_root, url, tmp_path, "--from", DAY, "--to", DAY2)
    assert plan.rc == 3 and f"{DAY}  empty" in plan.out
    result = _cli("score", root, registry_root, url, tmp_path, "--from", DAY, "--to", DAY2)
    assert result.rc == 3, result.err
    assert f"{DAY:<12}  empty: 1 file(s)" in result.out and f"empty tranche(s): {DAY}" in result.err
    assert query_rows(url, "SELECT count(*) FROM predictions") == [(10,)]
    allowed = _cli("score", root, registry_root, url, tmp_path, "--date", DAY,
                   "--allow-empty-tranches", "true")
    assert allowed.rc == 0, allowed.err
    assert query_rows(url, f"SELECT status FROM tranches WHERE tranche = '{DAY}'") == [
        ("completed",)]


def test_a_parquet_tranche_without_the_id_or_text_column_is_not_empty(
        registry_root: str, tmp_path: Path) -> None:
    """No row, and no column the run reads either: reading the file gives its dead
    letter (its schema is checked before its rows), so the plan does not call the
    tranche empty, and the run says why. (A header-only CSV has no row to reject: it is
    empty to the plan and to the run alike.)"""
    folder = tmp_path / "landing" / f"dt={DAY}"
    folder.mkdir(parents=True)
    pq.write_table(pa.table({"doc": pa.array([], pa.string()),
                             "body": pa.array([], pa.string())}), folder / "a.parquet")
    url = f"sqlite:///{tmp_path / 's.db'}"
    plan = _cli("plan", tmp_path / "landing", registry_root, url, tmp_path, "--date", DAY)
    assert f"{DAY}  empty" not in plan.out, plan.out
    result = _cli("score", tmp_path / "landing", registry_root, url, tmp_path, "--date", DAY)
    assert "empty" not in result.out, result.out
    [(reason,)] = query_rows(url, "SELECT reason FROM dead_letters")
    assert "id" in reason and "text" in reason, reason


@settings(max_examples=200, deadline=None)
@given(rows=st.lists(st.integers(min_value=0, max_value=5000), min_size=1, max_size=12),
       records=st.integers(min_value=0, max_value=12000),
       skipped=st.sets(st.integers(min_value=0, max_value=11)))
def test_waves_are_whole_tranches_in_date_order_each_of_at_least_the_records(
        rows: list[int], records: int, skipped: set[int]) -> None:
    """``ScorePlan.waves`` against a direct statement of the rule: the tranches to read,
    in date order, cut into consecutive waves; every wave but the last holds at least
    ``records`` estimated rows and would hold fewer without its last tranche; tranches
    not to read are in no wave; ``records`` 0 is one wave."""
    days = [f"2026-01-{i + 1:02d}" for i in range(len(rows))][::-1]  # listed out of order
    plan = ScorePlan(dates=[], tranches=[TranchePlan(d, f"/in/dt={d}") for d in days],
                     decisions={d: (SKIP if i in skipped else RUN, "")
                                for i, d in enumerate(days)},
                     tasks=[ReadTask((Chunk(d, f"/in/dt={d}/a.jsonl", "jsonl", 0, 1, 0,
                                            est_rows=n),))
                            for d, n in zip(days, rows, strict=True)])
    waves = plan.waves(records, 1 << 20, 2)
    to_read = sorted(t.tranche for t in plan.to_read)
    groups = [[t.tranche for t in w.to_read] for w in waves]
    est = dict(zip(days, rows, strict=True))
    if records == 0 or sum(est[t] for t in to_read[:-1]) < records:
        assert waves == [plan]  # one wave: the plan itself
        return
    assert [t for g in groups for t in g] == to_read
    for group in groups[:-1]:
        assert sum(est[t] for t in group) >= records > sum(est[t] for t in group[:-1])
    assert all(groups)
    for wave in waves:
        assert set(wave.decisions) == {t.tranche for t in wave.tranches}
        assert wave.fence is plan.fence and wave.root_unscored == []
