"""Shared fixtures: a Beam test pipeline on the local engine, and a tiny trained model
with a registry holding it.

Beam's plain DirectRunner would try to download Prism (no network here), so every
pipeline in the suite runs on ``FnApiRunner``, the engine the CLI's configs select.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from apache_beam.testing.test_pipeline import TestPipeline

from landing.samples import make_docs
from models.preprocess import PreprocessConfig, preprocess_texts
from models.recipe import train_and_evaluate
from models.registry import ModelRef, ModelRegistry
from tests.postgres import PG, pg_admin

MODEL_NAME = "demo"


@pytest.fixture
def pipeline() -> TestPipeline:
    """A fresh blocking TestPipeline on FnApiRunner (use once, as a context manager)."""
    return TestPipeline(runner="FnApiRunner")


@pytest.fixture(scope="session")
def preprocessing() -> PreprocessConfig:
    return PreprocessConfig()


@pytest.fixture(scope="session")
def trained_model(preprocessing: PreprocessConfig) -> Any:
    """TF-IDF + logistic regression fitted on 300 synthetic documents (well under 1 s)."""
    docs = list(make_docs(300, seed=1, prefix="train"))
    texts = preprocess_texts([d["text"] for d in docs], preprocessing)
    model, _ = train_and_evaluate(texts, [d["label"] for d in docs])
    return model


@pytest.fixture(scope="session")
def registry_root(tmp_path_factory: pytest.TempPathFactory, trained_model: Any,
                  preprocessing: PreprocessConfig) -> str:
    """A registry with ``demo`` version 1 = ``trained_model``. Never modify it in a test:
    use ``registry_copy`` for that."""
    root = tmp_path_factory.mktemp("registry")
    ModelRegistry(str(root)).register(
        MODEL_NAME, trained_model, preprocessing=preprocessing.to_dict(), source="conftest",
        metrics={"accuracy": 1.0},
    )
    return str(root)


@pytest.fixture(scope="session")
def model_ref(registry_root: str) -> ModelRef:
    return ModelRegistry(registry_root).resolve(MODEL_NAME)


@pytest.fixture
def registry_copy(registry_root: str, tmp_path: Any) -> str:
    """A private copy of the session registry that a test may tamper with."""
    dest = tmp_path / "registry"
    shutil.copytree(registry_root, dest)
    return str(dest)


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database on the local server, dropped after the test."""
    try:
        admin = pg_admin()
    except psycopg.OperationalError as exc:  # pragma: no cover - CI starts the server
        pytest.fail(f"PostgreSQL is not reachable at {PG}: {exc}")
    name = f"beamscore_test_{uuid.uuid4().hex[:12]}"
    admin.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
    admin.close()
    yield f"{PG}/{name}"
    with pg_admin() as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", [name])
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')  # type: ignore[arg-type]

