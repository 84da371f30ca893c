"""Batched inference: failure isolation, top-k, ScoreBatches on RunInference."""

from __future__ import annotations

import json
import time
from typing import Any

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.util import assert_that, equal_to

from models.registry import ModelRegistry
from pipelines.samples import make_docs
from transforms.inference import (
    PRED_LABEL,
    PRED_SCORE,
    PRED_TOP_K,
    DocBatchModelHandler,
    ScoreBatches,
    predict_with_isolation,
    top_k_columns,
)
from transforms.preprocess import PreprocessConfig, preprocess_texts
from transforms.read import DEAD_LETTERS
from transforms.records import DOC_ID, POSITION, TEXT


class PoisonModel:
    """sklearn-style classifier: deterministic per-row probabilities, and a
    ``predict_proba`` that raises for the whole call if any text contains POISON."""

    classes_ = np.array(["neg", "neutral", "pos"])

    def __init__(self) -> None:
        self.calls = 0

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        self.calls += 1
        texts = list(texts)
        if any("POISON" in t for t in texts):
            raise ValueError("poisoned input")
        raw = np.array([[len(t) % 3 + 1, t.count("a") + 1, len(t.split()) + 1] for t in texts],
                       dtype=np.float64).reshape(len(texts), 3)
        return raw / raw.sum(axis=1, keepdims=True)


class NaNModel(PoisonModel):
    """Returns a NaN row (instead of raising) for texts containing NAN."""

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        out = super().predict_proba([t.replace("NAN", "") for t in texts])
        out[[("NAN" in t) for t in texts]] = np.nan
        return out


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


def _texts(n: int, poisoned: set[int], marker: str = "POISON") -> list[str]:
    words = ["alpha", "banana", "cab", "a b c", "data", "aaa aa"]
    return [(f"{marker} " if i in poisoned else "") + f"{words[i % 6]} {i} " + "a" * (i % 4)
            for i in range(n)]


# ------------------------------------------------------------------ predict_with_isolation
@pytest.mark.parametrize("poisoned", [set(), {0}, {36}, {0, 5, 6, 36}, {3, 17, 18, 19, 20}])
def test_only_poisoned_rows_fail_and_others_match_clean_scoring(poisoned: set[int]) -> None:
    model = PoisonModel()
    texts = _texts(37, poisoned)
    probs, errors = predict_with_isolation(model, texts)
    assert set(errors) == poisoned
    assert all("poisoned input" in e and "ValueError" in e for e in errors.values())
    clean = [i for i in range(len(texts)) if i not in poisoned]
    expected = PoisonModel().predict_proba([texts[i] for i in clean])
    np.testing.assert_allclose(probs[clean], expected)
    assert np.isnan(probs[sorted(poisoned)]).all()
    if not poisoned:
        assert model.calls == 1, "a clean batch is one predict_proba call"


def test_every_row_poisoned_gives_an_error_per_row() -> None:
    texts = _texts(8, set(range(8)))
    probs, errors = predict_with_isolation(PoisonModel(), texts)
    assert sorted(errors) == list(range(8))
    assert np.isnan(probs).all()


def test_non_finite_probabilities_are_errors_for_those_rows_only() -> None:
    texts = _texts(10, {2, 7}, marker="NAN")
    probs, errors = predict_with_isolation(NaNModel(), texts)
    assert set(errors) == {2, 7}
    assert all("non-finite" in e for e in errors.values())
    ok = [i for i in range(10) if i not in (2, 7)]
    assert np.isfinite(probs[ok]).all()


def test_empty_input() -> None:
    probs, errors = predict_with_isolation(PoisonModel(), [])
    assert probs.shape == (0, 3) and errors == {}


# ------------------------------------------------------------------ top_k_columns
def test_top_k_orders_by_descending_probability_ties_in_class_order() -> None:
    probs = np.array([[0.1, 0.7, 0.2], [0.4, 0.4, 0.2], [0.05, 0.15, 0.8]])
    labels, scores, top_k = top_k_columns(probs, ["a", "b", "c"], 2)
    assert labels == ["b", "a", "c"]
    np.testing.assert_allclose(scores, [0.7, 0.4, 0.8])
    assert [json.loads(t) for t in top_k] == [
        [["b", 0.7], ["c", 0.2]], [["a", 0.4], ["b", 0.4]], [["c", 0.8], ["b", 0.15]]]


def test_top_k_larger_than_number_of_classes_lists_every_class() -> None:
    probs = np.array([[0.2, 0.5, 0.3]])
    labels, scores, top_k = top_k_columns(probs, np.array([1, 2, 3]), 10)
    assert labels == ["2"]
    assert json.loads(top_k[0]) == [["2", 0.5], ["3", 0.3], ["1", 0.2]]


# ------------------------------------------------------------------ ScoreBatches
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
