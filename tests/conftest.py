"""Shared fixtures: a Beam test pipeline on the local engine, a tiny trained model and a
registry holding it, and a DocBatch builder.

Beam's plain DirectRunner would try to download Prism (no network here), so every
pipeline in the suite runs on ``FnApiRunner``, the engine the CLI's configs select.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterable
from typing import Any

import pandas as pd
import pytest
from apache_beam.testing.test_pipeline import TestPipeline

from models.recipe import train_and_evaluate
from models.registry import ModelRef, ModelRegistry
from pipelines.samples import make_docs
from transforms.preprocess import PreprocessConfig, preprocess_texts
from transforms.records import DOC_ID, LABEL, METADATA, POSITION, RAW, TEXT, DocBatch

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


def build_batch(rows: Iterable[dict[str, Any]], *, tranche: str = "2026-01-01",
                source_file: str = "/in/dt=2026-01-01/part-0.jsonl",
                batch_key: str = "k-0000-00000", start: int = 1) -> DocBatch:
    """A DocBatch as the reader would emit it; positions start..start+n-1."""
    rows = list(rows)
    n = len(rows)
    frame = pd.DataFrame({
        DOC_ID: pd.Series([r.get("id") for r in rows], dtype=object),
        TEXT: pd.Series([r.get("text") for r in rows], dtype=object),
        LABEL: pd.Series([r.get("label") for r in rows], dtype=object),
        POSITION: list(range(start, start + n)),
        METADATA: pd.Series([None] * n, dtype=object),
        RAW: pd.Series(rows, dtype=object),
    })
    return DocBatch(tranche=tranche, source_file=source_file, batch_key=batch_key, frame=frame)


@pytest.fixture
def make_batch() -> Callable[..., DocBatch]:
    return build_batch
