"""Every record accounted for, every run recoverable: duplicate ids, the ledger's truth,
field names, bad files, and the small contracts of the CLI (SQLite end to end)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from landing.samples import make_docs, write_tranche
from models.registry import ModelRegistry
from store.database import connect
from store.ledger import Holder, TrancheLedger
from tests.data import sqlite_rows
from tests.pipelines.helpers import run_cli

D1, D2 = "2026-03-01", "2026-03-02"


def _score(root: Path, registry: str, tmp: Path, *extra: str) -> Any:
    return run_cli("score", "--input-root", str(root), "--registry", registry,
                   "--db", f"sqlite:///{tmp / 's.db'}", "--output-dir", str(tmp / "out"),
                   *extra)


def _summary(tmp: Path) -> dict[str, Any]:
    [(counts,)] = sqlite_rows(tmp / "s.db", "SELECT counts FROM runs ORDER BY started_at DESC "
                                            "LIMIT 1")
    return dict(json.loads(counts))


def test_duplicate_ids_across_tranches_are_rows_and_inside_one_are_dead_letters(
        registry_root: str, tmp_path: Path) -> None:
    root = tmp_path / "landing"
    docs = list(make_docs(200, seed=3, prefix="dup"))
    write_tranche(str(root), D1, docs, "jsonl", name="a")
    write_tranche(str(root), D2, docs[:100], "jsonl", name="a")
    write_tranche(str(root), D2, docs, "parquet", name="b")   # 100 repeat a.jsonl's ids
    write_tranche(str(root), D2, docs[:3], "csv", name="c")     # 3 more, a third time
    result = _score(root, registry_root, tmp_path, "--from", D1, "--to", D2,
                    "--max-dead-letter-ratio", "0.5")
    assert result.rc == 0, result.err
    db = tmp_path / "s.db"
    assert sqlite_rows(db, "SELECT tranche, count(*), count(DISTINCT doc_id) FROM predictions "
                           "GROUP BY tranche") == [(D1, 200, 200), (D2, 200, 200)]
    c = _summary(tmp_path)["tranches"]
    assert (c[D1]["read"], c[D1]["written"], c[D1]["dead_lettered"]) == (200, 200, 0)
    assert (c[D2]["read"], c[D2]["written"], c[D2]["dead_lettered"]) == (303, 200, 103)
    kept = dict(sqlite_rows(db, f"SELECT doc_id, source_file FROM predictions WHERE "
                                f"tranche = '{D2}'"))
    assert {os.path.basename(kept[d["id"]]) for d in docs[:100]} == {"a.jsonl"}
    assert {os.path.basename(kept[d["id"]]) for d in docs[100:]} == {"b.parquet"}
    dead = sqlite_rows(db, "SELECT stage, reason FROM dead_letters")
    assert len(dead) == 103 and {s for s, _ in dead} == {"dedupe"}
    assert all(r.startswith("duplicate id in tranche: first at ") and "a.jsonl position" in r
               for _, r in dead)
    files = list((tmp_path / "out" / f"dt={D2}").glob("predictions-*.parquet"))
    assert sum(pq.read_metadata(f).num_rows for f in files) == 200
    assert "MISMATCH" not in result.out


@pytest.mark.slow
def test_a_tranche_lost_to_dead_letters_is_failed_and_the_corrected_rerun_scores_it(
        registry_root: str, tmp_path: Path) -> None:
    root = tmp_path / "landing"
    docs = [{"id": d["id"], "body": d["text"]} for d in make_docs(400, seed=4, prefix="b")]
    write_tranche(str(root), D1, docs, "jsonl")  # the text is in "body", not "text"
    first = _score(root, registry_root, tmp_path, "--date", D1)
    assert first.rc == 4, first.err
    c = _summary(tmp_path)["tranches"][D1]
    assert (c["read"], c["dead_lettered"], c["written"]) == (400, 400, 0)
    [(status, counts)] = sqlite_rows(tmp_path / "s.db", "SELECT status, counts FROM tranches")
    assert status == "failed" and "dead-letter ratio 1.0000" in json.loads(counts)["failed"]
    again = _score(root, registry_root, tmp_path, "--date", D1)
    assert again.rc == 4, "a failed tranche is scored again, not skipped"
    fixed = _score(root, registry_root, tmp_path, "--date", D1, "--fields-text", "body")
    assert fixed.rc == 0, fixed.err
    assert sqlite_rows(tmp_path / "s.db", "SELECT count(*) FROM predictions") == [(400,)]
    assert sqlite_rows(tmp_path / "s.db", "SELECT status FROM tranches") == [("completed",)]
    # Changing a field name rescores a completed tranche; the same settings skip it.
    assert _score(root, registry_root, tmp_path, "--date", D1, "--fields-text", "body",
                  "--fields-metadata", "body").rc == 0
    assert _summary(tmp_path)["status"] == "succeeded"
    skip = _score(root, registry_root, tmp_path, "--date", D1, "--fields-text", "body",
                  "--fields-metadata", "body")
    assert skip.rc == 0 and _summary(tmp_path)["status"] == "skipped"


@pytest.mark.slow
def test_score_reads_the_fields_the_model_was_trained_with(tmp_path: Path) -> None:
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({"key": d["id"], "body": d["text"], "y": d["label"]})
                             + "\n" for d in make_docs(300, seed=5, prefix="t")))
    registry = str(tmp_path / "registry")
    trained = run_cli("train", "--docs", str(train), "--name", "demo", "--registry", registry,
                      "--id-field", "key", "--text-field", "body", "--label-field", "y")
    assert trained.rc == 0, trained.err
    meta = ModelRegistry(registry).metadata("demo", "1")
    assert (meta["id_field"], meta["text_field"], meta["label_field"]) == ("key", "body", "y")
    root = tmp_path / "landing"
    write_tranche(str(root), D1, [{"key": d["id"], "body": d["text"]}
                                  for d in make_docs(50, seed=6, prefix="s")], "jsonl")
    result = _score(root, registry, tmp_path, "--date", D1)
    assert result.rc == 0, result.err
    assert sqlite_rows(tmp_path / "s.db", "SELECT count(*) FROM predictions") == [(50,)]
    # A flag (or an overlay) naming another field wins over the model's recorded one.
    write_tranche(str(root), D2, [{"key": d["id"], "content": d["text"]}
                                  for d in make_docs(30, seed=7, prefix="c")], "jsonl")
    result = _score(root, registry, tmp_path, "--date", D2, "--fields-text", "content")
    assert result.rc == 0, result.err
    assert sqlite_rows(tmp_path / "s.db", f"SELECT count(*) FROM predictions WHERE tranche = "
                                          f"'{D2}'") == [(30,)]


@pytest.mark.slow
@pytest.mark.parametrize("changed", [["--inference-top-k", "2"],
                                     ["--validation-max-text-chars", "5000"]])
def test_settings_that_change_the_outputs_rescore_a_completed_tranche(
        registry_root: str, tmp_path: Path, changed: list[str]) -> None:
    root = tmp_path / "landing"
    write_tranche(str(root), D1, list(make_docs(60, seed=8, prefix="f")), "jsonl")
    assert _score(root, registry_root, tmp_path, "--date", D1).rc == 0
    assert _score(root, registry_root, tmp_path, "--date", D1).rc == 0
    assert _summary(tmp_path)["status"] == "skipped"
    assert _score(root, registry_root, tmp_path, "--date", D1, *changed).rc == 0
    assert _summary(tmp_path)["status"] == "succeeded"
    assert _score(root, registry_root, tmp_path, "--date", D1, *changed).rc == 0
    assert _summary(tmp_path)["status"] == "skipped"


def test_a_model_alias_names_the_version_to_score_with(registry_copy: str,
                                                       tmp_path: Path) -> None:
    ModelRegistry(registry_copy).promote("demo", "1")
    root = tmp_path / "landing"
    write_tranche(str(root), D1, list(make_docs(40, seed=9, prefix="al")), "jsonl")
    result = _score(root, registry_copy, tmp_path, "--date", D1, "--model", "demo:production")
    assert result.rc == 0, result.err
    assert "model demo:1" in result.out
    assert sqlite_rows(tmp_path / "s.db", "SELECT DISTINCT model_version FROM predictions") == [
        ("1",)]


def test_bad_files_are_one_dead_letter_each_and_the_rest_is_scored(
        registry_root: str, tmp_path: Path) -> None:
    root = tmp_path / "landing"
    folder = root / f"dt={D1}"
    write_tranche(str(root), D1, list(make_docs(100, seed=7, prefix="ok")), "jsonl", name="ok")
    (folder / "broken.parquet").write_bytes(b"PAR1 not really PAR1")
    (folder / "cut.jsonl.gz").write_bytes(b"\x1f\x8b\x08\x00truncated")
    (folder / "notes.txt").write_text("not input")
    (folder / "export.XML").write_text("<a/>")
    plan = run_cli("plan", "--input-root", str(root), "--registry", registry_root,
                   "--db", f"sqlite:///{tmp_path / 's.db'}", "--date", D1)
    assert plan.rc == 0, plan.err
    assert "3 file(s)" in plan.out and "2 file(s) ignored" in plan.out
    assert "notes.txt" in plan.out and "export.XML" in plan.out and "model demo:1" in plan.out
    result = _score(root, registry_root, tmp_path, "--date", D1, "--max-dead-letter-ratio", "0.1")
    assert result.rc == 0, result.err
    assert "ignored 2 file(s)" in result.out
    dead = sqlite_rows(tmp_path / "s.db", "SELECT source_file, position, stage, reason FROM "
                                          "dead_letters ORDER BY source_file")
    assert [(os.path.basename(f), p, s) for f, p, s, _ in dead] == [
        ("broken.parquet", 0, "read"), ("cut.jsonl.gz", 0, "read")]
    assert all(f in reason for f, _, _, reason in dead)
    assert sqlite_rows(tmp_path / "s.db", "SELECT count(*) FROM predictions") == [(100,)]


def test_an_input_root_that_does_not_exist_is_one_clear_error(
        registry_root: str, tmp_path: Path) -> None:
    result = _score(tmp_path / "nowhere", registry_root, tmp_path, "--date", D1)
    assert result.rc == 1 and "input root" in result.err and "does not exist" in result.err
    assert "missing" not in result.out


def test_plan_exits_5_for_a_busy_tranche_and_names_the_model(
        registry_root: str, tmp_path: Path) -> None:
    root = tmp_path / "landing"
    write_tranche(str(root), D1, list(make_docs(10, seed=8)), "jsonl")
    db = connect(f"sqlite:///{tmp_path / 's.db'}")
    db.init_schema()
    TrancheLedger(db, holder=Holder("another-host", 4242)).acquire(
        D1, "demo", "1", "fp", [], "run-elsewhere", 600)
    db.close()
    plan = run_cli("plan", "--input-root", str(root), "--registry", registry_root,
                   "--db", f"sqlite:///{tmp_path / 's.db'}", "--date", D1,
                   "--model", "demo:1")
    assert plan.rc == 5 and "busy" in plan.out and "model demo:1" in plan.out
    score = _score(root, registry_root, tmp_path, "--date", D1)
    assert score.rc == 5 and "run-elsewhere" in score.out


def test_model_aliases_resolve_and_unknown_aliases_are_named(
        registry_copy: str, tmp_path: Path) -> None:
    ModelRegistry(registry_copy).promote("demo", "1")
    assert ModelRegistry(registry_copy).resolve("demo:production").version == "1"
    result = run_cli("plan", "--registry", registry_copy, "--input-root", str(tmp_path),
                     "--model", "demo:staging", "--date", D1)
    assert result.rc == 1 and "no alias 'staging'" in result.err


def test_register_of_a_file_that_is_not_a_pickle_says_so(tmp_path: Path) -> None:
    path = tmp_path / "model.joblib"
    path.write_text("this is not a pickle")
    result = run_cli("models", "register", "--file", str(path), "--name", "x",
                     "--registry", str(tmp_path / "registry"))
    assert result.rc == 1
    assert f"{path} is not a joblib or pickle file" in result.err and "KeyError" not in result.err


def test_train_names_the_file_and_line_of_what_it_skips(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("WARNING")
    train = tmp_path / "train.jsonl"
    lines = [json.dumps(d) for d in make_docs(60, seed=9, prefix="t")]
    lines[4] = '{"id": "bad", "text": "caf\\xe9'  # malformed
    train.write_bytes("\n".join(lines).encode() + b"\n\xff\xfe not utf-8\n")
    result = run_cli("train", "--docs", str(train), "--name", "m",
                     "--registry", str(tmp_path / "registry"))
    assert result.rc == 0, result.err
    messages = [r.getMessage() for r in caplog.records]
    assert any(f"{train}:5: skipped: malformed JSON" in m for m in messages)
    assert any(f"{train}:61: skipped: undecodable bytes" in m for m in messages)
    assert any("skipped 2 line(s)" in m for m in messages)
    meta = ModelRegistry(str(tmp_path / "registry")).metadata("m", "1")
    assert meta["metrics"]["skipped_records"] == 2


def test_a_sqlite_path_that_cannot_be_created_explains_relative_and_absolute(
        registry_root: str, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    result = run_cli("db", "init", "--db", f"sqlite:///{blocker}/sub/s.db")
    assert result.rc == 1
    assert "sqlite:///relative/path is relative" in result.err
    assert "sqlite:////absolute/path is absolute" in result.err


def test_every_flag_has_help_without_markup(capsys: pytest.CaptureFixture[str]) -> None:
    from pipelines.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, command in sub.choices.items():  # type: ignore[union-attr]
        nested = [a for a in command._actions if a.dest.endswith("_command")]
        parsers = list(nested[0].choices.values()) if nested else [command]
        for p in parsers:
            for action in p._actions:
                if action.dest == "help":
                    continue
                assert action.help, f"{name} {action.option_strings or action.dest}: no help"
                assert "`" not in action.help and "``" not in action.help, action.help
            text = p.format_help()
            assert "configuration" in text or name not in ("score", "plan")
