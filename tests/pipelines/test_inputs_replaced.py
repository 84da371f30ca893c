"""A local input file replaced between planning and reading, through ``beamscore score``:
larger, smaller, or the same bytes written again (a new modification time). The file,
planned in several byte ranges, is one read dead letter saying it changed since
planning, nothing of it is scored, the tranche is left failed and the run exits 75
(transient: retry once the files are final); the next run scores the new content
whole. Beside other files, however few dead letters, the same: the other files are
scored, the tranche is left failed (exit 75), and the next plan sees the changed file."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from landing.samples import make_docs, write_tranche
from pipelines.orchestration.exit_codes import EXIT_TEMPFAIL
from tests.data import query_rows
from tests.pipelines.helpers import replace_after_planning, run_cli

DAY = "2026-08-01"
OLD, LARGER, SMALLER = 3500, 5000, 2000  # documents; 3,500 are over 1 MiB


def _replacement(path: str, change: str) -> tuple[Any, set[str]]:
    """What replaces the file, and the ids it then holds."""
    if change == "same size, new mtime":
        ids = {json.loads(line)["id"] for line in Path(path).read_text().splitlines()}

        def touch() -> None:
            st = os.stat(path)
            Path(path).write_bytes(Path(path).read_bytes())
            os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
        return touch, ids
    docs = list(make_docs(LARGER if change == "larger" else SMALLER, seed=2, prefix="new"))
    data = b"".join(json.dumps(d).encode() + b"\n" for d in docs)
    return (lambda: Path(path).write_bytes(data)), {d["id"] for d in docs}


def _score(root: Path, registry: str, url: str, tmp: Path) -> Any:
    return run_cli("score", "--date", DAY, "--input-root", str(root), "--registry", registry,
                   "--db", url, "--output-dir", str(tmp / "out"), "--read-chunk-bytes",
                   str(1 << 20))


@pytest.mark.slow
@pytest.mark.parametrize("change", ["larger", "smaller", "same size, new mtime"])
def test_a_file_replaced_after_planning_is_a_dead_letter_then_rescored_whole(
        registry_root: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        change: str) -> None:
    root = tmp_path / "landing"
    path = write_tranche(str(root), DAY, list(make_docs(OLD, seed=1, prefix="old")), "jsonl")
    assert os.path.getsize(path) > 1 << 20  # planned in several byte ranges
    replace, new_ids = _replacement(path, change)
    url = f"sqlite:///{tmp_path / 's.db'}"
    replace_after_planning(monkeypatch, replace)
    result = _score(root, registry_root, url, tmp_path)
    assert result.rc == EXIT_TEMPFAIL, result.err
    assert "changed while the run read them: tranche(s) 2026-08-01 left failed" in result.err
    assert f"{DAY:<12}{1:>10}{0:>10}{0:>10}{1:>8}{0:>10}  CHANGED" in result.out
    assert query_rows(url, "SELECT COUNT(*) FROM predictions") == [(0,)]
    [(source, position, stage, reason)] = query_rows(
        url, "SELECT source_file, position, stage, reason FROM dead_letters")
    assert (source, position, stage) == (path, 0, "read")
    assert reason.startswith(f"unreadable jsonl file: {path}: InputChanged: changed since "
                             "planning: listed at planning with "), reason
    [(counts,)] = query_rows(url, "SELECT counts FROM runs")
    total = json.loads(counts)["total"]
    assert (total["read"], total["scored"], total["dead_lettered"]) == (1, 0, 1)
    assert query_rows(url, "SELECT status FROM tranches") == [("failed",)]

    monkeypatch.undo()
    result = _score(root, registry_root, url, tmp_path)
    assert result.rc == 0, result.err
    assert {r for (r,) in query_rows(url, "SELECT doc_id FROM predictions")} == new_ids
    assert query_rows(url, "SELECT COUNT(*) FROM dead_letters") == [(0,)]


def test_under_the_ratio_the_tranche_is_left_failed_and_the_next_plan_rescores(
        registry_root: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "landing"
    write_tranche(str(root), DAY, list(make_docs(100, seed=3, prefix="kept")), "jsonl",
                  name="kept")
    path = write_tranche(str(root), DAY, list(make_docs(20, seed=1, prefix="old")), "jsonl")
    replace, new_ids = _replacement(path, "larger")
    url = f"sqlite:///{tmp_path / 's.db'}"
    replace_after_planning(monkeypatch, replace)
    result = _score(root, registry_root, url, tmp_path)
    assert result.rc == EXIT_TEMPFAIL, result.err
    [(counts,)] = query_rows(url, "SELECT counts FROM runs")
    total = json.loads(counts)["total"]
    assert (total["read"], total["scored"], total["dead_lettered"]) == (101, 100, 1)
    assert json.loads(counts)["status"] == "input_changed"
    [(status, ledger)] = query_rows(url, "SELECT status, counts FROM tranches")
    assert status == "failed" and "changed while the run read them" in json.loads(ledger)[
        "failed"]
    [(reason,)] = query_rows(url, "SELECT reason FROM dead_letters")
    assert "InputChanged: changed since planning" in reason
    monkeypatch.undo()
    result = run_cli("plan", "--date", DAY, "--input-root", str(root), "--registry",
                     registry_root, "--db", url)
    first = result.out.splitlines()[0]
    assert result.rc == 0 and "would run" in first and "failed" in first, result.out
    result = _score(root, registry_root, url, tmp_path)
    assert result.rc == 0, result.err
    scored = {r for (r,) in query_rows(url, "SELECT doc_id FROM predictions")}
    assert new_ids <= scored and len(scored) == 100 + len(new_ids)
