"""``beamscore train`` end to end: its cross-fitted reference raises no alert on nights
from the training distribution, its progress is logged per stage, and a reference made
of its own training documents is refused at ``models register`` (SQLite, the real CLI)."""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path
from typing import Any

import pytest

from landing.samples import write_tranche
from tests.data import sqlite_rows
from tests.pipelines.helpers import run_cli

pytestmark = pytest.mark.slow
TOPICS = ("billing", "shipping", "technical", "account")
NIGHTS = ("2026-10-01", "2026-10-02", "2026-10-03")


def _topic_docs(n: int, seed: int, prefix: str) -> list[dict[str, Any]]:
    """``n`` documents of four well separated topics (a model gets nearly all right)
    over a long-tailed vocabulary: 30 words, half of them the topic's own."""
    rng = random.Random(seed)
    docs = []
    for i in range(n):
        topic = TOPICS[rng.randrange(len(TOPICS))]
        words = [f"{topic}{int(rng.paretovariate(0.6)) % 300}" if rng.random() < 0.5
                 else f"w{int(rng.paretovariate(0.5)) % 3000}" for _ in range(30)]
        docs.append({"id": f"{prefix}-{i}", "text": " ".join(words), "label": topic})
    return docs


def _jsonl(path: Path, docs: list[dict[str, Any]]) -> str:
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    return str(path)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    base = tmp_path_factory.mktemp("trained")
    train = _jsonl(base / "train.jsonl", _topic_docs(2000, seed=200, prefix="t"))
    registry = str(base / "registry")
    result = run_cli("train", "--docs", train, "--name", "topics", "--registry", registry)
    assert result.rc == 0, result.err
    return base, train, registry


def test_three_nights_of_the_training_distribution_raise_no_alert(
        trained: tuple[Path, str, str], tmp_path: Path) -> None:
    _, _, registry = trained
    root = tmp_path / "landing"
    for night, day in enumerate(NIGHTS):
        write_tranche(str(root), day, _topic_docs(2000, seed=300 + night, prefix=f"n{night}"),
                      "jsonl")
        result = run_cli("score", "--date", day, "--input-root", str(root), "--registry",
                         registry, "--model", "topics", "--db", f"sqlite:///{tmp_path / 's.db'}",
                         "--output-dir", str(tmp_path / "out"))
        assert result.rc == 0, result.err
    alerts = sqlite_rows(tmp_path / "s.db", "SELECT tranche, metric, slice, value FROM "
                                            "monitoring WHERE status = 'alert'")
    assert alerts == []
    assert sqlite_rows(tmp_path / "s.db", "SELECT count(*) FROM retrain_triggers") == [(0,)]
    judged = sqlite_rows(tmp_path / "s.db", "SELECT count(DISTINCT tranche) FROM monitoring "
                                            "WHERE metric = 'score_ks' AND status = 'ok'")
    assert judged == [(3,)]


def test_train_logs_a_line_per_stage(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    train = _jsonl(tmp_path / "train.jsonl", _topic_docs(300, seed=201, prefix="p"))
    with caplog.at_level(logging.INFO):
        result = run_cli("train", "--docs", train, "--name", "p", "--registry",
                         str(tmp_path / "registry"))
    assert result.rc == 0, result.err
    for stage in ("read 300 labelled documents", "fit fold 1/5", "fit fold 5/5",
                  "final fit on 300 documents", "reference profile of 300 out-of-fold",
                  "registered p:1"):
        assert stage in caplog.text, stage
    meta = json.loads((tmp_path / "registry" / "p" / "1" / "metadata.json").read_text())
    assert meta["metrics"]["evaluation"] == "5-fold cross-fitted"
    profile = json.loads((tmp_path / "registry" / "p" / "1" / "profile.json").read_text())
    assert profile["n"] == 300 and profile["reference"]["accuracy"] == meta["metrics"]["accuracy"]


def test_a_reference_of_the_training_documents_is_refused(
        trained: tuple[Path, str, str], tmp_path: Path) -> None:
    base, train, registry = trained
    artifact = str(Path(registry) / "topics" / "1" / "model.joblib")
    again = str(tmp_path / "registry")
    refused = run_cli("models", "register", "--file", artifact, "--name", "copy",
                      "--registry", again, "--reference", train)
    assert refused.rc == 1
    assert "2000 of 2000 reference documents (100.0%) are in the model's training set" \
        in refused.err
    assert not (tmp_path / "registry" / "copy").exists()
    held_out = _jsonl(base / "held_out.jsonl", _topic_docs(800, seed=202, prefix="h"))
    accepted = run_cli("models", "register", "--file", artifact, "--name", "copy",
                       "--registry", again, "--reference", held_out)
    assert accepted.rc == 0, accepted.err
    assert (tmp_path / "registry" / "copy" / "1" / "profile.json").exists()
