"""End to end through ``pipelines.cli.main``: train, models, plan and score.

Everything lives under tmp paths passed explicitly (--input-root, --registry, --db,
--output-dir); the pipelines run on FnApiRunner, as the bundled configs select.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from landing.samples import BAD_COUNTS, LABELS, make_docs, write_tranche
from models.preprocess import PreprocessConfig, preprocess_texts
from models.registry import ModelRegistry
from tests.data import sqlite_rows
from tests.pipelines.helpers import Result, run_cli, with_model, worker_processes

DAYS = ("2026-01-01", "2026-01-02")
FORMATS = ("jsonl", "jsonl.gz", "parquet", "csv")
DOCS_PER_FILE = 100  # 16 bad of 416 read per tranche: under the default 5% dead-letter limit
# The bad records write_tranche(inject_bad=True) adds, by the stage that rejects them.
BAD_BY_STAGE = {
    "jsonl": {"read": 3, "validate": 3},     # malformed, undecodable, not an object | ids, text
    "jsonl.gz": {"read": 3, "validate": 3},
    "csv": {"read": 2, "validate": 1},       # field count, undecodable | empty text
    "parquet": {"validate": 1},              # null text
}


def table_count(db: Path, table: str) -> int:
    """Rows in ``table``; 0 when the database or the table does not exist."""
    if not db.exists():
        return 0
    try:
        return sqlite_rows(db, f"SELECT count(*) FROM {table}")[0][0]
    except sqlite3.OperationalError:
        return 0


def parquet_files(out_dir: Path) -> list[Path]:
    return sorted(out_dir.glob("dt=*/predictions-*.parquet"))


def parquet_rows(out_dir: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for path in parquet_files(out_dir):
        rows += pq.read_table(path).to_pylist()
    return rows


@dataclass
class Landing:
    root: str
    docs: dict[str, dict[str, Any]]   # doc_id -> {doc, tranche, path, fmt, position}

    def valid_ids(self, tranche: str | None = None) -> set[str]:
        return {k for k, v in self.docs.items() if tranche in (None, v["tranche"])}


@pytest.fixture(scope="module")
def landing(tmp_path_factory: pytest.TempPathFactory) -> Landing:
    root = tmp_path_factory.mktemp("landing")
    docs: dict[str, dict[str, Any]] = {}
    for k, day in enumerate(DAYS):
        for j, fmt in enumerate(FORMATS):
            batch = list(make_docs(DOCS_PER_FILE, seed=50 + 10 * k + j, prefix=f"{day}-{fmt}"))
            path = write_tranche(str(root), day, batch, fmt, name=f"part-{j}", inject_bad=True)
            for i, d in enumerate(batch):
                # JSONL: the bad lines follow doc len//2; other formats append them at the end.
                shifted = fmt.startswith("jsonl") and i > len(batch) // 2
                position = i + 1 + (BAD_COUNTS[fmt] if shifted else 0)
                docs[d["id"]] = {"doc": d, "tranche": day, "path": path, "fmt": fmt,
                                 "position": position}
    return Landing(str(root), docs)


def score_args(landing: Landing, registry: str, db: Path, out: Path, *extra: str) -> list[str]:
    return with_model(["score", "--input-root", landing.root, "--registry", registry,
                       "--db", f"sqlite:///{db}", "--output-dir", str(out), *extra])


@dataclass
class Scored:
    result: Result
    db: Path
    out: Path


@pytest.fixture(scope="module")
def scored(landing: Landing, registry_root: str, tmp_path_factory: pytest.TempPathFactory
           ) -> Scored:
    base = tmp_path_factory.mktemp("first-run")
    db, out = base / "scores.db", base / "output"
    result = run_cli(*score_args(landing, registry_root, db, out,
                                 "--from", DAYS[0], "--to", DAYS[1]))
    return Scored(result, db, out)


# ------------------------------------------------------------------ the main run
def test_score_exits_0_and_accounts_for_every_record(scored: Scored) -> None:
    assert scored.result.rc == 0, scored.result.err
    [(status, counts_json)] = sqlite_rows(scored.db, "SELECT status, counts FROM runs")
    assert status == "succeeded"
    counts = json.loads(counts_json)["tranches"]
    assert sorted(counts) == list(DAYS)
    bad = sum(BAD_COUNTS[f] for f in FORMATS)
    for day in DAYS:
        c = counts[day]
        assert c["read"] == len(FORMATS) * DOCS_PER_FILE + bad
        assert c["read"] == c["scored"] + c["dead_lettered"] == c["written"] + c["dead_lettered"]
        assert c["dead_lettered"] == bad
        assert c["written"] == len(FORMATS) * DOCS_PER_FILE
        assert c["valid"] == c["scored"]


def test_predictions_are_exactly_the_valid_docs_with_lineage(
        scored: Scored, landing: Landing, registry_root: str) -> None:
    rows = sqlite_rows(scored.db, "SELECT doc_id, tranche, label, score, top_k, model_name, "
                            "model_version, model_sha256, run_id, source_file FROM predictions")
    assert len(rows) == len(landing.docs)
    assert {r[0] for r in rows} == landing.valid_ids()
    [(run_id,)] = sqlite_rows(scored.db, "SELECT run_id FROM runs")
    ref = ModelRegistry(registry_root).resolve("demo")
    for doc_id, tranche, label, score, top_k, name, version, sha, rid, source in rows:
        expected = landing.docs[doc_id]
        assert (name, version, sha, rid) == ("demo", ref.version, ref.sha256, run_id)
        assert tranche == expected["tranche"]
        assert source == expected["path"]
        assert label in LABELS
        assert json.loads(top_k)[0] == [label, pytest.approx(score, abs=1e-6)]
    for day in DAYS:
        written = json.loads(sqlite_rows(scored.db, "SELECT counts FROM runs")[0][0])[
            "tranches"][day]["written"]
        assert sqlite_rows(
            scored.db, f"SELECT count(*) FROM predictions WHERE tranche = '{day}'") == [
            (written,)]


def test_predicted_labels_are_the_models_on_preprocessed_text(
        scored: Scored, landing: Landing, trained_model: Any) -> None:
    ids = sorted(landing.docs)
    texts = preprocess_texts([landing.docs[i]["doc"]["text"] for i in ids], PreprocessConfig())
    expected = dict(zip(ids, trained_model.predict(texts)))
    got = dict(sqlite_rows(scored.db, "SELECT doc_id, label FROM predictions"))
    assert got == expected


def test_parquet_files_hold_the_same_rows_with_positions(scored: Scored,
                                                         landing: Landing) -> None:
    rows = parquet_rows(scored.out)
    assert len(rows) == len(landing.docs), "one Parquet row per written prediction"
    db = {r[0]: r[1:] for r in sqlite_rows(
        scored.db, "SELECT doc_id, label, score, run_id, model_version FROM predictions")}
    for r in rows:
        expected = landing.docs[r["doc_id"]]
        assert (r["label"], r["score"], r["run_id"], r["model_version"]) == db[r["doc_id"]]
        assert r["tranche"] == expected["tranche"]
        assert r["source_file"] == expected["path"]
        assert r["position"] == expected["position"]
        assert r["true_label"] == expected["doc"]["label"]
    per_dir = Counter(p.parent.name for p in parquet_files(scored.out) for _ in
                      range(pq.read_metadata(p).num_rows))
    assert per_dir == {f"dt={d}": len(landing.valid_ids(d)) for d in DAYS}


def test_dead_letters_by_stage_and_file(scored: Scored, landing: Landing) -> None:
    rows = sqlite_rows(scored.db, "SELECT tranche, source_file, stage FROM dead_letters")
    got = Counter(rows)
    expected: Counter[tuple[str, str, str]] = Counter()
    paths = {(v["tranche"], v["fmt"]): v["path"] for v in landing.docs.values()}
    for day in DAYS:
        for fmt, stages in BAD_BY_STAGE.items():
            for stage, n in stages.items():
                expected[(day, paths[(day, fmt)], stage)] += n
    assert got == expected
    for day in DAYS:
        files = list((scored.out / f"dt={day}").glob("dead_letters-*.jsonl"))
        lines = [json.loads(line) for f in files for line in f.read_text().splitlines()]
        assert len(lines) == sum(BAD_COUNTS[f] for f in FORMATS)
        assert all(d["tranche"] == day and d["payload"] is not None for d in lines)


# ------------------------------------------------------------------ reruns and workers
def test_second_identical_run_adds_no_rows_and_no_files(landing: Landing, registry_root: str,
                                                        tmp_path: Path) -> None:
    db, out = tmp_path / "s.db", tmp_path / "out"
    args = score_args(landing, registry_root, db, out, "--from", DAYS[0], "--to", DAYS[1])
    first = run_cli(*args)
    assert first.rc == 0, first.err
    rows = sorted(sqlite_rows(db, "SELECT doc_id, label, score FROM predictions"))
    files = {p: p.read_bytes() for p in parquet_files(out)}
    second = run_cli(*args)
    assert second.rc == 0, second.err
    assert sorted(sqlite_rows(db, "SELECT doc_id, label, score FROM predictions")) == rows
    assert len(rows) == len(landing.docs)
    assert {p: p.read_bytes() for p in parquet_files(out)}.keys() == files.keys()


@pytest.mark.slow
def test_two_workers_produce_the_same_rows(scored: Scored, landing: Landing, registry_root: str,
                                           tmp_path: Path) -> None:
    db, out = tmp_path / "w2.db", tmp_path / "out"
    result = run_cli(*score_args(landing, registry_root, db, out,
                                 "--from", DAYS[0], "--to", DAYS[1], "--workers", "2"))
    assert result.rc == 0, result.err
    sql = ("SELECT doc_id, tranche, label, round(score, 9), top_k, model_version, source_file "
           "FROM predictions ORDER BY doc_id")
    assert sqlite_rows(db, sql) == sqlite_rows(scored.db, sql)
    assert len(sqlite_rows(db, sql)) == len(landing.docs)
    assert sorted(r["doc_id"] for r in parquet_rows(out)) == sorted(landing.docs)


# ------------------------------------------------------------------ exit codes
def _plan(landing: Landing, registry: str, db: Path, out: Path) -> Result:
    return run_cli("plan", "--input-root", landing.root, "--registry", registry,
                   "--db", f"sqlite:///{db}", "--output-dir", str(out),
                   "--from", DAYS[0], "--to", "2026-01-03")


def test_plan_lists_tranches_and_writes_nothing(landing: Landing, registry_root: str,
                                                tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = _plan(landing, registry_root, tmp_path / "plan.db", out)
    assert result.rc == 3  # 2026-01-03 is missing
    lines = result.out.splitlines()
    for day in DAYS:
        [line] = [x for x in lines if x.startswith(day)]
        assert "would run" in line and f"{len(FORMATS)} file(s)" in line
    [missing] = [x for x in lines if x.startswith("2026-01-03")]
    assert "missing" in missing and "dt=2026-01-03" in missing
    for path in {v["path"] for v in landing.docs.values()}:
        assert path in result.out
    assert not out.exists(), "plan must not write outputs"


@pytest.mark.slow
def test_console_script_fast_exit_keeps_exit_code_and_output(
        landing: Landing, registry_root: str, tmp_path: Path) -> None:
    """The ``beamscore`` script ends with ``os._exit``: block-buffered stdout (a pipe) is
    still delivered in full and the exit code is the one ``main`` returned."""
    import subprocess
    import sys

    script = Path(sys.executable).with_name("beamscore")
    assert script.exists(), "the package is not installed (pip install -e .)"
    args = with_model(["plan", "--input-root", landing.root, "--registry", registry_root,
                       "--db", f"sqlite:///{tmp_path / 'plan.db'}", "--output-dir",
                       str(tmp_path / "o"), "--from", DAYS[0], "--to", "2026-01-03"])
    proc = subprocess.run([str(script), *args], capture_output=True, text=True, timeout=120)
    in_process = run_cli(*args)
    assert proc.returncode == in_process.rc == 3, proc.stderr
    assert proc.stdout == in_process.out
    assert proc.stdout.rstrip().splitlines()[-1].endswith("task(s)")
    # The fast path is taken (os._exit, seen through a wrapper), with the output and
    # exit code intact; main() under sys.exit keeps the normal shutdown.
    probe = ("import os\nimport sys\nimport pipelines.cli as cli\n"
             "real_exit = os._exit\n"
             "def traced_exit(code):\n    os.write(1, b'fast exit\\n')\n    real_exit(code)\n"
             "os._exit = traced_exit\n"
             f"sys.argv = ['beamscore', *{args!r}]\n")
    for last, fast in (("sys.exit(cli.main())", False), ("cli.console_main()", True)):
        run = subprocess.run([sys.executable, "-c", probe + last], capture_output=True,
                             text=True, timeout=120, cwd=str(Path(__file__).parent.parent))
        assert run.returncode == 3, run.stderr
        assert run.stdout.replace("fast exit\n", "") == in_process.out
        assert run.stdout.endswith("fast exit\n") is fast


def test_plan_does_not_create_the_database(landing: Landing, registry_root: str,
                                           tmp_path: Path) -> None:
    db = tmp_path / "plan.db"
    assert _plan(landing, registry_root, db, tmp_path / "out").rc == 3
    assert not db.exists(), "plan must not create or touch the database"


def test_missing_tranche_exits_3_and_scores_the_others(landing: Landing, registry_root: str,
                                                       tmp_path: Path) -> None:
    db, out = tmp_path / "m.db", tmp_path / "out"
    result = run_cli(*score_args(landing, registry_root, db, out,
                                 "--from", DAYS[1], "--to", "2026-01-03"))
    assert result.rc == 3, result.err
    assert "2026-01-03" in result.err
    assert {r[0] for r in sqlite_rows(db, "SELECT doc_id FROM predictions")} == \
        landing.valid_ids(DAYS[1])
    [(run_id, counts)] = sqlite_rows(db, "SELECT run_id, counts FROM runs")
    assert list(json.loads(counts)["tranches"]) == [DAYS[1]]
    assert json.loads(counts)["exit_code"] == 3
    shown = run_cli("runs", "show", run_id, "--db", f"sqlite:///{db}")
    assert "exit code 3" in shown.out.splitlines(), shown.out


def test_only_tranche_missing_exits_3(landing: Landing, registry_root: str,
                                      tmp_path: Path) -> None:
    result = run_cli(*score_args(landing, registry_root, tmp_path / "m.db", tmp_path / "out",
                                 "--date", "2026-01-09"))
    assert result.rc == 3
    # a nightly run that found nothing still leaves its trace
    assert sqlite_rows(tmp_path / "m.db", "SELECT status FROM runs") == [("skipped",)]
    listed = run_cli("runs", "list", "--db", f"sqlite:///{tmp_path / 'm.db'}")
    assert listed.rc == 0 and "skipped" in listed.out


def test_runs_list_shows_the_latest_runs_first_up_to_the_limit(
        landing: Landing, registry_root: str, tmp_path: Path) -> None:
    db, out = tmp_path / "l.db", tmp_path / "out"
    for day in (*DAYS, DAYS[0]):  # the third run skips its tranche
        assert run_cli(*score_args(landing, registry_root, db, out, "--date", day)).rc == 0
    ids = [r for (r,) in sqlite_rows(db, "SELECT run_id FROM runs ORDER BY started_at DESC")]
    assert len(ids) == 3
    listed = run_cli("runs", "list", "--limit", "2", "--db", f"sqlite:///{db}")
    assert listed.rc == 0
    shown = [line.split()[0] for line in listed.out.splitlines()[1:]]
    assert shown == ids[:2]


def test_db_init_migrates_a_version_1_database_in_place(tmp_path: Path) -> None:
    from store.schema import SCHEMA_VERSION
    from tests.store.v1_schema import create_v1

    path = tmp_path / "v1.db"
    with sqlite3.connect(path) as conn:
        create_v1(lambda sql, params: conn.execute(sql, params), "?")
    result = run_cli("db", "init", "--db", f"sqlite:///{path}")
    assert result.rc == 0, result.err
    assert sqlite_rows(path, "SELECT max(version) FROM schema_version") == [(SCHEMA_VERSION,)]
    assert sqlite_rows(path, "SELECT count(*) FROM predictions") == [(2,)]


def test_db_init_refuses_a_table_that_is_not_beamscores_with_exit_1(tmp_path: Path) -> None:
    path = tmp_path / "hand.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE predictions (doc_id TEXT, label TEXT, score REAL)")
    result = run_cli("db", "init", "--db", f"sqlite:///{path}")
    assert result.rc == 1, result.err
    assert result.err.startswith("beamscore: error: the database's tables are not the ones "
                                 "beamscore writes (made by hand or altered): "
                                 "predictions.tranche is missing; "), result.err
    assert "schema ready" not in result.out


def test_dead_letter_ratio_above_limit_exits_4(landing: Landing, registry_root: str,
                                               tmp_path: Path) -> None:
    db, out = tmp_path / "r.db", tmp_path / "out"
    result = run_cli(*score_args(landing, registry_root, db, out, "--date", DAYS[0],
                                 "--max-dead-letter-ratio", "0.0001"))
    assert result.rc == 4
    assert "dead-letter ratio" in result.err
    [(status,)] = sqlite_rows(db, "SELECT status FROM runs")
    assert status == "dead_letter_ratio_exceeded"


def test_unknown_model_version_exits_1_with_a_clear_message(
        landing: Landing, registry_root: str, tmp_path: Path) -> None:
    db, out = tmp_path / "u.db", tmp_path / "out"
    result = run_cli(*score_args(landing, registry_root, db, out, "--date", DAYS[0],
                                 "--model", "demo:99"))
    assert result.rc == 1
    assert "beamscore: error:" in result.err
    assert "demo" in result.err and "99" in result.err and "not found" in result.err
    assert table_count(db, "predictions") == 0
    assert not out.exists()


def test_tampered_model_is_refused_and_nothing_is_written(
        landing: Landing, registry_copy: str, tmp_path: Path) -> None:
    model = Path(registry_copy) / "demo" / "1" / "model.joblib"
    model.write_bytes(model.read_bytes() + b"\0")
    db, out = tmp_path / "t.db", tmp_path / "out"
    result = run_cli(*score_args(landing, registry_copy, db, out, "--date", DAYS[0]))
    assert result.rc == 1
    assert "sha256" in result.err
    assert table_count(db, "predictions") == 0
    assert table_count(db, "dead_letters") == 0
    assert not out.exists() or not parquet_files(out)


@pytest.mark.slow
def test_sklearn_mismatch_is_refused_at_launch(landing: Landing, registry_copy: str,
                                               tmp_path: Path) -> None:
    meta_path = Path(registry_copy) / "demo" / "1" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["sklearn_version"] = "0.24.2"
    meta_path.write_text(json.dumps(meta))
    db, out = tmp_path / "v.db", tmp_path / "out"
    result = run_cli(*score_args(landing, registry_copy, db, out, "--date", DAYS[0],
                                 "--workers", "2"))
    assert result.rc == 1
    assert "scikit-learn" in result.err
    assert table_count(db, "predictions") == 0


# ------------------------------------------------------------------ train and models
def test_train_prints_version_and_models_list_shows_it(tmp_path: Path) -> None:
    train_dir = tmp_path / "train"
    train_dir.mkdir()
    with open(train_dir / "labelled.jsonl", "w") as fh:
        for d in make_docs(300, seed=3, prefix="t"):
            fh.write(json.dumps(d) + "\n")
    registry = str(tmp_path / "registry")
    docs = str(train_dir / "*.jsonl")

    first = run_cli("train", "--docs", docs, "--name", "tickets", "--registry", registry)
    assert first.rc == 0, first.err
    assert first.out.strip().splitlines()[-1] == "1"
    second = run_cli("train", "--docs", docs, "--name", "tickets", "--registry", registry)
    assert second.out.strip().splitlines()[-1] == "2"
    meta = ModelRegistry(registry).metadata("tickets", "2")
    assert meta["preprocessing"] == PreprocessConfig().to_dict()
    assert meta["metrics"]["n_train"] + meta["metrics"]["n_test"] == 300

    promote = run_cli("models", "promote", "tickets", "1", "--registry", registry)
    assert promote.rc == 0
    listing = run_cli("models", "list", "--registry", registry)
    assert listing.rc == 0
    rows = [line.split() for line in listing.out.splitlines() if line.startswith("tickets")]
    assert [r[1] for r in rows] == ["1", "2"]
    assert rows[0][2] == "production"
    assert meta["sha256"][:12] in listing.out


def test_train_with_no_matching_files_exits_1(tmp_path: Path) -> None:
    result = run_cli("train", "--docs", str(tmp_path / "none" / "*.jsonl"), "--name", "x",
                     "--registry", str(tmp_path / "registry"))
    assert result.rc == 1
    assert "no files match" in result.err


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_model_loaded_once_per_worker_process(landing: Landing, registry_root: str,
                                              tmp_path: Path, workers: int) -> None:
    # Small batches: dozens of predict calls per worker, still one load per process. Both
    # tranches: a tranche's small files are one read task, so each worker gets one.
    result = run_cli(*score_args(landing, registry_root, tmp_path / "s.db", tmp_path / "out",
                                 "--from", DAYS[0], "--to", DAYS[1], "--batch-size", "16",
                                 "--workers", str(workers)))
    assert result.rc == 0, result.err
    assert f"model loads {workers}" in result.out


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_progress_is_logged_readably_from_every_worker(
        landing: Landing, registry_root: str, tmp_path: Path, workers: int,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO")
    result = run_cli(*score_args(landing, registry_root, tmp_path / "s.db", tmp_path / "out",
                                 "--date", DAYS[0], "--batch-size", "50",
                                 "--sink-batch-rows", "50", "--progress-seconds", "0",
                                 "--workers", str(workers)))
    assert result.rc == 0, result.err
    progress = [r.getMessage() for r in caplog.records if "sink progress" in r.getMessage()]
    assert progress, "no progress lines"
    if workers > 1:  # forwarded from worker processes, unwrapped from Beam's protobuf text
        assert all(m.startswith("worker: sink progress") for m in progress)
        assert not any("Worker: severity" in r.getMessage() and r.levelname == "INFO"
                       for r in caplog.records)


def test_configured_metadata_fields_reach_database_and_parquet(
        landing: Landing, registry_root: str, tmp_path: Path) -> None:
    db, out = tmp_path / "s.db", tmp_path / "out"
    result = run_cli(*score_args(landing, registry_root, db, out, "--date", DAYS[0],
                                 "--fields-metadata", "channel,missing_field"))
    assert result.rc == 0, result.err
    rows = dict(sqlite_rows(db, "SELECT doc_id, metadata FROM predictions"))
    assert rows and len(rows) == len(landing.valid_ids(DAYS[0]))
    for doc_id, meta in rows.items():
        expected = landing.docs[doc_id]["doc"]["channel"]
        assert json.loads(meta) == {"channel": expected, "missing_field": None}
    parquet = {r["doc_id"]: r["metadata"] for r in parquet_rows(out)}
    assert parquet == rows


def test_no_date_means_yesterday_utc(registry_root: str, tmp_path: Path) -> None:
    import datetime as dt

    yesterday = (dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=1)).isoformat()
    root = tmp_path / "landing"
    write_tranche(str(root), yesterday, list(make_docs(20, seed=5, prefix="y")), "jsonl")
    result = run_cli("plan", "--input-root", str(root), "--registry", registry_root,
                     "--db", f"sqlite:///{tmp_path / 's.db'}")
    assert result.rc == 0, result.err
    assert result.out.startswith(f"{yesterday}  would run")


@pytest.mark.slow
def test_local_engines_score_identically_and_leave_no_processes(
        landing: Landing, registry_root: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Also: the fork engine loads the model once, in its zygote, for its workers."""
    import subprocess
    import sys

    from engine.forkserver import ForkServer
    from pipelines.orchestration import score
    from transforms.infer import DocBatchModelHandler

    preloads: list[Any] = []
    preload = ForkServer.preload
    monkeypatch.setattr(ForkServer, "preload",
                        lambda self, fn: preloads.append(fn) or preload(self, fn))
    built: list[Any] = []
    build = score.build_pipeline
    monkeypatch.setattr(score, "build_pipeline",
                        lambda *a, **k: built.append(k["handler"]) or build(*a, **k))

    def rows(db: Path) -> list[tuple[Any, ...]]:
        return sorted(sqlite_rows(db, "SELECT doc_id, label, score, top_k FROM predictions"))

    # A fresh process: the zygote is forked from the launcher itself. Both tranches: a
    # tranche's small files are one read task, so each of the two workers gets one.
    db1 = tmp_path / "fork-launcher.db"
    dates = ("--from", DAYS[0], "--to", DAYS[1])
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", *score_args(
            landing, registry_root, db1, tmp_path / "o1", *dates, "--workers", "2")],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "model loads 2" in proc.stdout
    # In this (long-lived) process: the fork engine (a zygote spawned, as gRPC has run
    # here already, or forked if not) and Beam's multi_processing.
    db2, db3 = tmp_path / "fork-spawned.db", tmp_path / "spawn.db"
    for db, engine in ((db2, "fork"), (db3, "spawn")):
        result = run_cli(*score_args(landing, registry_root, db, tmp_path / engine, *dates,
                                     "--workers", "2", "--local-engine", engine))
        assert result.rc == 0, result.err
    assert [(type(fn.__self__), fn.__name__) for fn in preloads] == [
        (DocBatchModelHandler, "preload")], "the fork engine's run, and only it"
    assert preloads[0].__self__ is built[0], "the zygote loads the model the pipeline uses"
    assert rows(db1) == rows(db2) == rows(db3)
    assert len(rows(db1)) == len(landing.valid_ids())
    assert worker_processes() == []


def test_a_date_not_written_yyyy_mm_dd_is_a_usage_error(
        capsys: pytest.CaptureFixture[str]) -> None:
    from pipelines.cli import main

    for text in ("20260101", "2026-1-1", "2026-W01-1"):
        with pytest.raises(SystemExit) as exc:
            main(["plan", "--date", text])
        assert exc.value.code == 2
        assert f"not a date (YYYY-MM-DD): '{text}'" in capsys.readouterr().err


def test_an_input_root_that_is_a_file_is_refused_naming_the_key(
        registry_root: str, tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    result = run_cli("score", "--date", "2026-01-01", "--input-root", str(afile),
                     "--registry", registry_root, "--db", f"sqlite:///{tmp_path / 's.db'}",
                     "--output-dir", str(tmp_path / "out"))
    assert result.rc == 1
    assert result.err.strip().splitlines()[-1] == (
        f"beamscore: error: input root {afile} is a file, not a folder of dt=YYYY-MM-DD "
        "folders (input_root / --input-root)")


def test_skipped_and_missing_tranches_do_not_claim_nothing_to_do(
        registry_root: str, tmp_path: Path) -> None:
    root = tmp_path / "landing"
    write_tranche(str(root), "2026-01-01", list(make_docs(20, seed=5)), "jsonl")
    common = ["--input-root", str(root), "--registry", registry_root, "--db",
              f"sqlite:///{tmp_path / 's.db'}", "--output-dir", str(tmp_path / "out")]
    assert run_cli("score", "--date", "2026-01-01", *common).rc == 0
    result = run_cli("score", "--from", "2026-01-01", "--to", "2026-01-02", *common)
    assert result.rc == 3
    assert "nothing to do" not in result.err and "missing tranche(s): 2026-01-02" in result.err


def test_a_report_written_into_a_folder_is_named_by_its_run(
        registry_root: str, tmp_path: Path) -> None:
    root = tmp_path / "landing"
    write_tranche(str(root), "2026-01-01", list(make_docs(20, seed=6)), "jsonl")
    db = f"sqlite:///{tmp_path / 's.db'}"
    assert run_cli("score", "--date", "2026-01-01", "--input-root", str(root), "--registry",
                   registry_root, "--db", db, "--output-dir", str(tmp_path / "out")).rc == 0
    [(run_id,)] = sqlite_rows(tmp_path / "s.db", "SELECT run_id FROM runs")
    folder = tmp_path / "reports"
    folder.mkdir()
    result = run_cli("report", run_id, "--output", str(folder), "--db", db, model=None)
    assert result.rc == 0, result.err
    assert result.out.strip() == str(folder / f"{run_id}.html")
    assert (folder / f"{run_id}.html").read_text().startswith("<!")


def test_train_refuses_an_invalid_model_name_before_training(tmp_path: Path) -> None:
    result = run_cli("train", "--docs", str(tmp_path / "none*.jsonl"), "--name", "<script>",
                     "--registry", str(tmp_path / "reg"), model=None)
    assert result.rc == 1
    assert "invalid model name '<script>'" in result.err


@pytest.mark.parametrize("limit", ["0", "-1", "two"])
def test_runs_list_refuses_a_limit_below_1(limit: str, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """SQLite reads LIMIT -1 as no limit, PostgreSQL refuses it: a usage error first."""
    from pipelines.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["runs", "list", "--limit", limit, "--db", f"sqlite:///{tmp_path / 'l.db'}"])
    assert exc.value.code == 2
    assert "argument --limit: " in capsys.readouterr().err


def test_connection_options_libpq_refuses_exit_1_at_once_naming_db() -> None:
    from tests.postgres import PG

    url = f"{PG}/test?sslmode=bogus"
    result = run_cli("runs", "list", "--db", url, "--sink-connect-timeout-seconds", "300")
    assert result.rc == 1, result.err
    assert 'invalid sslmode value: "bogus"' in result.err and "`db`" in result.err


@pytest.mark.parametrize("argv", [
    ["runs", "list", "--sink-redis-url", "redis://:s3cr3t-pw@127.0.0.1:6379/0"],
    ["models", "list", "--db", "postgresql://scorer:s3cr3t-pw@127.0.0.1:5432/test"],
    ["score", "--date", "2026-01-01", "--dbb=postgresql://scorer:s3cr3t-pw@127.0.0.1/test"],
])
def test_an_unrecognized_argument_is_named_without_its_password(
        argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A usage error quotes what it refuses, a URL in it without the password."""
    from pipelines.cli import main

    model = ["--model", "m", "--db", f"sqlite:///{tmp_path / 's.db'}"] \
        if argv[0] == "score" else []
    with pytest.raises(SystemExit) as exc:
        main([*argv, *model, "--registry", str(tmp_path), "--input-root", str(tmp_path)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "unrecognized arguments" in err and "***" in err and "s3cr3t-pw" not in err


@pytest.mark.parametrize("argv, meant", [
    (["runs", "list", "--limt", "3"], "--limit"),
    (["plan", "--date", "2026-01-01", "--batch-sise", "5"], "--batch-size"),
    (["score", "--date", "2026-01-01", "--batch-sise=5"], "--batch-size"),
    (["score", "--date", "2026-01-01", "--temp_locaton=/tmp/x"], "--temp_location"),
])
def test_a_mistyped_flag_names_the_one_it_most_likely_meant(
        argv: list[str], meant: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """beamscore's flags, the command's, and for score Beam's own options."""
    from pipelines.cli import main

    extra = ["--model", "m"] if argv[0] in ("score", "plan") else []
    with pytest.raises(SystemExit) as exc:
        main([*argv, *extra, "--db", f"sqlite:///{tmp_path / 's.db'}",
              "--registry", str(tmp_path), "--input-root", str(tmp_path)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"(did you mean {meant}?)" in err, err


def test_a_flag_of_another_command_is_refused_without_a_suggestion(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pipelines.cli import main

    with pytest.raises(SystemExit):
        main(["runs", "list", "--input-root", str(tmp_path),
              "--db", f"sqlite:///{tmp_path / 's.db'}"])
    err = capsys.readouterr().err
    assert "unrecognized arguments: --input-root" in err and "did you mean" not in err
