"""ScoreBatches on RunInference: scoring, dead letters, one model load, time limit."""

from __future__ import annotations

import json
import time
from typing import Any

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.util import assert_that, equal_to
from sklearn.pipeline import Pipeline

from landing.samples import make_docs
from models.fastpath import FastTextPipeline
from models.preprocess import PreprocessConfig, preprocess_texts
from models.registry import ModelRegistry
from transforms.records import (
    DEAD_LETTERS,
    DOC_ID,
    POSITION,
    PRED_LABEL,
    PRED_SCORE,
    PRED_TOP_K,
    TEXT,
)
from transforms.score import DocBatchModelHandler, ScoreBatches


class PoisonedPipeline:
    """Wraps a fitted sklearn pipeline; raises on any batch containing POISON."""

    def __init__(self, inner: Any):
        self.inner = inner
        self.classes_ = inner.classes_

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        texts = list(texts)
        if any("POISON" in t for t in texts):
            raise RuntimeError("model crashed on poisoned text")
        return self.inner.predict_proba(texts)


class SlowPipeline(PoisonedPipeline):
    """Takes 5 s on any batch containing SLOW: longer than the time limit under test."""

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        texts = list(texts)
        if any("SLOW" in t for t in texts):
            time.sleep(5)
        return self.inner.predict_proba(texts)


class CountingPipeline(PoisonedPipeline):
    """Counts how many times it is unpickled, i.e. loaded from the registry."""

    loads = 0

    def __setstate__(self, state: dict[str, Any]) -> None:
        type(self).loads += 1
        self.__dict__.update(state)


def _docs_batch(make_batch: Any, n: int, seed: int, key: str, poisoned: set[int] = frozenset(),
                source: str = "/in/dt=2026-01-01/part-0.jsonl") -> Any:
    rows = list(make_docs(n, seed=seed, prefix=key))
    for i in poisoned:
        rows[i]["text"] = "POISON " + rows[i]["text"]
    return make_batch(rows, source_file=source, batch_key=key)


def _register(factory: pytest.TempPathFactory, name: str, model: Any) -> tuple[str, Any]:
    """A fresh registry holding ``model`` as ``name``; (root, ref)."""
    root = str(factory.mktemp(f"{name}-registry"))
    ref = ModelRegistry(root).register(
        name, model, preprocessing=PreprocessConfig().to_dict(), source="test")
    return root, ref


@pytest.fixture(scope="module")
def poisoned_registry(tmp_path_factory: pytest.TempPathFactory, trained_model: Any) -> Any:
    return _register(tmp_path_factory, "poisoned", PoisonedPipeline(trained_model))


def test_score_batches_scores_clean_rows_and_dead_letters_poisoned(
        pipeline: Any, make_batch: Any, poisoned_registry: Any, trained_model: Any) -> None:
    root, ref = poisoned_registry
    batches = [_docs_batch(make_batch, 12, 1, "b1", {0, 7}),
               _docs_batch(make_batch, 9, 2, "b2", source="/in/dt=2026-01-01/part-1.jsonl"),
               _docs_batch(make_batch, 5, 3, "b3", {0, 1, 2, 3, 4})]
    clean, poisoned = [], []
    for b in batches:
        for doc_id, text, pos in zip(b.frame[DOC_ID], b.frame[TEXT], b.frame[POSITION]):
            (poisoned if "POISON" in text else clean).append((doc_id, text, pos, b.source_file))
    classes = [str(c) for c in trained_model.classes_]
    expected_probs = trained_model.predict_proba([t for _, t, _, _ in clean])
    expected = [
        (doc_id, classes[int(np.argmax(p))]) for (doc_id, *_), p in zip(clean, expected_probs)
    ]
    handler = DocBatchModelHandler(root, ref, top_k=3)

    def check_columns(scored: list[Any]) -> None:
        assert {b.batch_key for b in scored} == {"b1", "b2"}, "all-poisoned batch not emitted"
        for b in scored:
            f = b.frame
            for label, score, top_k in zip(f[PRED_LABEL], f[PRED_SCORE], f[PRED_TOP_K]):
                top = json.loads(top_k)
                assert len(top) == 3
                assert top[0][0] == label
                assert top[0][1] == pytest.approx(score, abs=1e-6)
                assert [s for _, s in top] == sorted((s for _, s in top), reverse=True)
                assert 0.0 < score <= 1.0

    with pipeline as p:
        out = p | beam.Create(batches) | ScoreBatches(handler, 0, 500)
        labels = out["scored"] | beam.FlatMap(
            lambda b: zip(b.frame[DOC_ID].tolist(), b.frame[PRED_LABEL].tolist()))
        assert_that(labels, equal_to(expected), label="labels")
        assert_that(out["scored"], check_columns, label="columns")
        dead = out[DEAD_LETTERS] | beam.Map(
            lambda d: (d["position"], d["source_file"], d["stage"],
                       "model crashed on poisoned text" in d["reason"]))
        assert_that(dead, equal_to([(pos, src, "inference", True)
                                    for _, _, pos, src in poisoned]), label="dead")


@pytest.fixture(scope="module")
def counting_registry(tmp_path_factory: pytest.TempPathFactory, trained_model: Any) -> Any:
    return _register(tmp_path_factory, "counting", CountingPipeline(trained_model))


def test_model_is_loaded_once_per_process_for_many_batches(
        pipeline: Any, make_batch: Any, counting_registry: Any) -> None:
    root, ref = counting_registry
    n_batches = 40
    batches = [_docs_batch(make_batch, 5, seed=i, key=f"b{i:02d}") for i in range(n_batches)]
    handler = DocBatchModelHandler(root, ref, top_k=2)
    CountingPipeline.loads = 0
    _ = (pipeline | beam.Create(batches) | ScoreBatches(handler, 0, 500))["scored"] | beam.Map(len)
    result = pipeline.run()
    result.wait_until_finish()

    def metric(name: str, kind: str) -> Any:
        found = result.metrics().query(
            MetricsFilter().with_namespace("beamscore").with_name(name))[kind]
        assert len(found) == 1, (name, found)
        return found[0].committed

    assert metric("inference_batch_latency_micro_secs", "distributions").count == n_batches
    assert metric("num_inferences", "counters") == 5 * n_batches
    assert metric("load_model_latency_milli_secs", "distributions").count == 1
    assert CountingPipeline.loads == 1, "the artifact was unpickled more than once"


def test_handler_scores_with_the_registry_model(registry_root: str, model_ref: Any,
                                                make_batch: Any, trained_model: Any) -> None:
    handler = DocBatchModelHandler(registry_root, model_ref, top_k=5)
    model = handler.load_model()
    batch = _docs_batch(make_batch, 20, seed=9, key="k")
    batch = batch.with_frame(batch.frame.assign(
        **{TEXT: preprocess_texts(batch.frame[TEXT].tolist(), PreprocessConfig())}))
    [(scored, dead)] = list(handler.run_inference(batch, model))
    assert dead == []
    assert scored.frame[PRED_LABEL].tolist() == list(trained_model.predict(batch.frame[TEXT]))
    assert scored.frame[DOC_ID].tolist() == batch.frame[DOC_ID].tolist()


def test_batch_over_the_time_limit_is_dead_lettered_others_scored(
        pipeline: Any, make_batch: Any, trained_model: Any,
        tmp_path_factory: pytest.TempPathFactory) -> None:
    root = str(tmp_path_factory.mktemp("slow-registry"))
    ref = ModelRegistry(root).register("slow", SlowPipeline(trained_model),
                                       preprocessing=PreprocessConfig().to_dict(), source="test")
    fast = _docs_batch(make_batch, 6, 4, "fast")
    slow = _docs_batch(make_batch, 4, 5, "slow")
    slow = slow.with_frame(slow.frame.assign(text="SLOW " + slow.frame[TEXT]))
    handler = DocBatchModelHandler(root, ref, top_k=2)
    with pipeline as p:
        out = p | beam.Create([fast, slow]) | ScoreBatches(handler, 2, 500)
        scored = out["scored"] | beam.FlatMap(lambda b: b.frame[DOC_ID].tolist())
        assert_that(scored, equal_to(fast.frame[DOC_ID].tolist()), label="scored")
        dead = out[DEAD_LETTERS] | beam.Map(lambda d: (d["position"], d["stage"]))
        assert_that(dead, equal_to([(pos, "inference") for pos in slow.frame[POSITION]]),
                    label="dead")



def test_handler_uses_the_fast_path_only_when_enabled(registry_root: str,
                                                      model_ref: Any) -> None:
    fast = DocBatchModelHandler(registry_root, model_ref, top_k=3).load_model()
    plain = DocBatchModelHandler(registry_root, model_ref, top_k=3,
                                 fast_text_features=False).load_model()
    assert isinstance(fast, FastTextPipeline)
    assert isinstance(plain, Pipeline)
    texts = [d["text"] for d in make_docs(200, seed=21)] + ["", "café refund", "退款"]
    assert np.array_equal(fast.predict_proba(texts), plain.predict_proba(texts))

