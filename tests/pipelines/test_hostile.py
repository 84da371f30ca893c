"""Hostile artifacts and hung models end to end: nothing from a planted pickle runs, and
a time limit stops the hung call (1 and 2 workers)."""

from __future__ import annotations

import hashlib
import json
import pathlib
import pickle
import time
from pathlib import Path
from typing import Any

import joblib
import pytest

from landing.samples import make_docs, write_tranche
from models.registry import ModelRegistry
from models.unpickle import Policy
from tests.data import sqlite_rows
from tests.doubles import (
    TRUSTED,
    CrashesInWorker,
    HangingPipeline,
    HangingTokenizer,
    PoisonedPipeline,
)
from tests.pipelines.helpers import run_cli, workers_left

DAY = "2026-06-01"


class _Payload:
    """Unpickling this writes ``marker``: the stand-in for an attacker's code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self) -> Any:
        return (pathlib.Path.write_text, (pathlib.Path(self.marker), "ran"))


@pytest.fixture
def landing(tmp_path: Path) -> Path:
    root = tmp_path / "landing"
    write_tranche(str(root), DAY, list(make_docs(40, seed=31, prefix="h")), "jsonl")
    return root


def _score(landing: Path, registry: str, tmp: Path, *extra: str) -> Any:
    return run_cli("score", "--date", DAY, "--input-root", str(landing), "--registry",
                   registry, "--db", f"sqlite:///{tmp / 's.db'}", "--output-dir",
                   str(tmp / "out"), *extra)


def _plant(registry: str, payload: bytes, globals_listed: list[str] | None = None) -> None:
    """Replace demo:1's artifact and rewrite its metadata to match, as an attacker who
    can write to the registry would."""
    version = Path(registry) / "demo" / "1"
    (version / "model.joblib").write_bytes(payload)
    meta = json.loads((version / "metadata.json").read_text())
    meta["sha256"] = hashlib.sha256(payload).hexdigest()
    meta["size_bytes"] = len(payload)
    if globals_listed is not None:
        meta["globals"] = globals_listed
    (version / "metadata.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_planted_pickle_with_a_matching_checksum_never_runs(
        landing: Path, registry_copy: str, tmp_path: Path, workers: str) -> None:
    marker = tmp_path / "payload-ran"
    recorded = ModelRegistry(registry_copy).metadata("demo", "1")["globals"]
    _plant(registry_copy, pickle.dumps(_Payload(marker)), globals_listed=recorded)
    result = _score(landing, registry_copy, tmp_path, "--workers", workers)
    assert result.rc == 1
    assert "pathlib.Path.write_text" in result.err and "refusing" in result.err
    assert not marker.exists()
    assert sqlite_rows(tmp_path / "s.db", "SELECT count(*) FROM predictions") == [(0,)]
    assert sqlite_rows(tmp_path / "s.db", "SELECT status FROM runs") == [("failed",)]


def test_a_planted_pickle_whose_metadata_names_it_is_refused_at_launch(
        landing: Path, registry_copy: str, tmp_path: Path) -> None:
    marker = tmp_path / "payload-ran"
    _plant(registry_copy, pickle.dumps(_Payload(marker)),
           globals_listed=["pathlib.Path.write_text"])
    result = _score(landing, registry_copy, tmp_path)
    assert result.rc == 1 and "pathlib.Path.write_text" in result.err
    assert not marker.exists() and not (tmp_path / "s.db").exists()


def test_registering_a_planted_file_fails_and_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "payload-ran"
    path = tmp_path / "handover.joblib"
    path.write_bytes(pickle.dumps(_Payload(marker)))
    result = run_cli("models", "register", "--file", str(path), "--name", "x",
                     "--registry", str(tmp_path / "registry"))
    assert result.rc == 1 and "pathlib.Path.write_text" in result.err
    assert not marker.exists()
    assert not (tmp_path / "registry" / "x").exists()


def crashing_tree(path: Path) -> None:
    """TF-IDF + a decision tree whose root's children point far past its node array: only
    allow-listed globals (scikit-learn's ``Tree`` checks its state's dtypes and shapes,
    not its indices), and ``predict_proba`` reads out of bounds: SIGSEGV."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import Pipeline
    from sklearn.tree import DecisionTreeClassifier

    texts = ["printer broken", "screen dark", "password reset", "login failed"] * 5
    labels = ["hw", "hw", "acct", "acct"] * 5
    pipe = Pipeline([("tfidf", TfidfVectorizer()), ("clf", DecisionTreeClassifier())])
    pipe.fit(texts, labels)
    tree = pipe[-1].tree_
    state = tree.__getstate__()
    nodes = state["nodes"].copy()
    nodes["left_child"][0] = nodes["right_child"][0] = 1 << 40
    tree.__setstate__({**state, "nodes": nodes})
    joblib.dump(pipe, path)


def test_registering_a_model_that_crashes_its_process_is_refused_naming_the_file(
        tmp_path: Path) -> None:
    """The smoke test's segfault ends a child process, not the command."""
    path = tmp_path / "tree.joblib"
    crashing_tree(path)
    result = run_cli("models", "register", "--file", str(path), "--name", "tree",
                     "--registry", str(tmp_path / "registry"))
    assert result.rc == 1
    assert f"beamscore: error: {path}: predict_proba crashed its process on a one-text " \
           "smoke test (signal SIGSEGV, a crash); not registered" in result.err
    assert not (tmp_path / "registry" / "tree").exists()


def test_with_a_time_limit_a_model_that_crashes_its_process_costs_records_not_the_run(
        tmp_path: Path) -> None:
    """The crafted tree segfaults on every record: with a time limit each call runs in a
    child, so the launcher (1 worker: the pipeline runs in it) lives on and every record
    is a dead letter naming the signal, once."""
    path = tmp_path / "tree.joblib"
    crashing_tree(path)
    registry = str(tmp_path / "registry")
    ModelRegistry(registry).register("demo", joblib.load(path), preprocessing={},
                                     source="test")
    root = tmp_path / "crashing"
    write_tranche(str(root), DAY, list(make_docs(12, seed=35, prefix="c")), "jsonl")
    result = _score(root, registry, tmp_path, "--workers", "1", "--tracking-enabled",
                    "false", "--inference-timeout-ms-per-record", "100")
    assert result.rc == 4, result.err
    assert sqlite_rows(tmp_path / "s.db", "SELECT count(*), count(DISTINCT position), stage, "
                       "reason FROM dead_letters GROUP BY stage, reason") == [
        (12, 12, "inference", "the scoring process died (signal SIGSEGV, a crash)")]
    assert sqlite_rows(tmp_path / "s.db", "SELECT count(*) FROM predictions") == [(0,)]


@pytest.mark.parametrize("sig, rc, line", [
    ("SIGSEGV", 1, "a worker process crashed mid-run (signal SIGSEGV, a crash: a fault in "
                   "native code, the model's or a library's, not a lack of memory; a retry "
                   "would meet it again) (exit 1)"),
    ("SIGKILL", 75, "a worker process was lost mid-run (signal SIGKILL, killed (e.g. by the "
                    "out-of-memory killer): Channel closed prematurely); retry later (exit 75)"),
])
def test_a_lost_worker_is_named_by_the_signal_that_ended_it(
        landing: Path, trained_model: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        sig: str, rc: int, line: str) -> None:
    """A worker process ended by a signal outside any call kept apart: a crash (SIGSEGV)
    is exit 1, not retried as if memory ran out; SIGKILL (the OOM killer's) is exit 75."""
    registry = str(tmp_path / "registry")
    ModelRegistry(registry).register("demo", CrashesInWorker(trained_model), preprocessing={},
                                     source="test", policy=Policy(TRUSTED))
    monkeypatch.setenv(CrashesInWorker.CRASH_ENV, sig)
    result = _score(landing, registry, tmp_path, "--workers", "2",
                    "--inference-trusted-types", "tests.doubles.CrashesInWorker")
    assert result.rc == rc, result.err
    assert f"beamscore: error: {line}" in result.err
    assert sqlite_rows(tmp_path / "s.db", "SELECT status FROM runs") == [("failed",)]
    assert workers_left() == []


def test_a_users_class_needs_trust_at_registration_and_at_scoring(
        landing: Path, trained_model: Any, tmp_path: Path) -> None:
    path = tmp_path / "handover.joblib"
    joblib.dump(PoisonedPipeline(trained_model), path)
    registry = str(tmp_path / "registry")
    name = "tests.doubles.PoisonedPipeline"
    refused = run_cli("models", "register", "--file", str(path), "--name", "demo",
                      "--registry", registry)
    assert refused.rc == 1 and name in refused.err
    registered = run_cli("models", "register", "--file", str(path), "--name", "demo",
                         "--registry", registry, "--trust", name)
    assert registered.rc == 0, registered.err
    meta = ModelRegistry(registry).metadata("demo", "1")
    assert meta["trusted_types"] == [name] and name in meta["globals"]
    untrusted = _score(landing, registry, tmp_path)
    assert untrusted.rc == 1 and name in untrusted.err
    trusted = _score(landing, registry, tmp_path, "--inference-trusted-types", name)
    assert trusted.rc == 0, trusted.err
    assert sqlite_rows(tmp_path / "s.db", "SELECT count(*) FROM predictions") == [(40,)]


@pytest.mark.slow
def test_a_vectoriser_that_hangs_is_stopped_too_with_tracking_on(
        tmp_path: Path) -> None:
    """The model's own tokenizer hangs on one text: featurisation for tracking runs
    within the time limit as scoring does, so the run ends with that record alone
    dead-lettered (it used to hang for ever)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    train = list(make_docs(300, seed=33, prefix="t"))
    model = make_pipeline(TfidfVectorizer(tokenizer=HangingTokenizer(), token_pattern=None),
                          LogisticRegression(max_iter=200))
    model.fit([d["text"] for d in train], [d["label"] for d in train])
    registry = str(tmp_path / "registry")
    ModelRegistry(registry).register("demo", model, preprocessing={}, source="test",
                                     policy=Policy(TRUSTED))
    root = tmp_path / "hostile"
    docs = list(make_docs(24, seed=34, prefix="h"))
    docs[3]["text"] = "hangnow " + docs[3]["text"]
    write_tranche(str(root), DAY, docs, "jsonl")
    started = time.monotonic()
    result = _score(root, registry, tmp_path, "--batch-size", "8", "--tracking-enabled",
                    "true", "--inference-trusted-types", "tests.doubles.HangingTokenizer",
                    "--inference-timeout-ms-per-record", "500")
    assert result.rc == 0, result.err
    assert time.monotonic() - started < 120
    db = tmp_path / "s.db"
    assert sqlite_rows(db, "SELECT position, stage, substr(reason, 1, 8) FROM "
                           "dead_letters") == [(4, "inference", "timeout:")]
    assert sqlite_rows(db, "SELECT count(*) FROM predictions") == [(23,)]
    assert workers_left() == []


@pytest.mark.slow
@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_hung_model_is_stopped_and_only_its_record_dead_lettered(
        landing: Path, trained_model: Any, tmp_path: Path, workers: str,
        capfd: pytest.CaptureFixture[str]) -> None:
    registry = str(tmp_path / "registry")
    ModelRegistry(registry).register("demo", HangingPipeline(trained_model),
                                     preprocessing={}, source="test", policy=Policy(TRUSTED))
    root = tmp_path / "hostile"
    docs = list(make_docs(40, seed=32, prefix="h"))
    docs[5]["text"] = "HANG " + docs[5]["text"]
    docs[30]["text"] = "SLOW " + docs[30]["text"]
    write_tranche(str(root), DAY, docs, "jsonl")
    started = time.monotonic()
    result = _score(root, registry, tmp_path, "--workers", workers, "--batch-size", "8",
                    "--inference-trusted-types", "tests.doubles.HangingPipeline",
                    "--inference-timeout-ms-per-record", "500")
    elapsed = time.monotonic() - started
    assert result.rc == 0, result.err
    db = tmp_path / "s.db"
    assert sqlite_rows(db, "SELECT position, stage, substr(reason, 1, 8) FROM "
                           "dead_letters") == [(6, "inference", "timeout:")]  # line 6
    scored = {r[0] for r in sqlite_rows(db, "SELECT doc_id FROM predictions")}
    assert scored == {d["id"] for d in docs} - {docs[5]["id"]}
    # A batch of 8 at 0.5 s per record: 4 s, then 2, 1 and 0.5 s to isolate the record.
    assert elapsed < 4 + 2 + 1 + 0.5 + 20, elapsed
    assert workers_left() == []
    # Each time-limited call forked its worker with gRPC's fork handlers off: they can
    # abort a child forked while the worker's gRPC threads are busy (and log each fork).
    assert "fork() handlers" not in capfd.readouterr().err
