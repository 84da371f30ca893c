"""The default recipe, cross-fitted: out-of-fold figures describe unseen documents, the
parallel and sequential fits agree, and the artifact registers and loads restricted."""

from __future__ import annotations

import io
import random
import re
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest

from landing.samples import make_docs
from models.behaviour import reference_profile
from models.importance import text_features
from models.provenance import TRAINING_ATTRIBUTE, record_of, training_record
from models.recipe import build_pipeline, train_and_evaluate, train_cross_fitted
from models.registry import ModelRegistry
from models.unpickle import Policy, load_restricted
from tracking.profile import Profile


def _docs(n: int, seed: int) -> tuple[list[str], list[str]]:
    docs = list(make_docs(n, seed=seed, prefix=f"s{seed}"))
    return [d["text"] for d in docs], [d["label"] for d in docs]


def _zipf_docs(n: int, seed: int, topics: int = 4) -> tuple[list[str], list[str]]:
    """Documents of a few topics over a long-tailed vocabulary: many words are rare, so
    whether a vocabulary saw a document changes its out-of-vocabulary share."""
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for _ in range(n):
        topic = int(rng.integers(topics))
        common = rng.zipf(1.3, 25) % 20_000
        special = rng.zipf(1.5, 8) % 2_000
        texts.append(" ".join([f"w{w}" for w in common] + [f"t{topic}x{w}" for w in special]))
        labels.append(f"topic{topic}")
    return texts, labels


@pytest.fixture(scope="module")
def fitted() -> Any:
    texts, labels = _docs(1500, seed=11)
    return texts, labels, train_cross_fitted(texts, labels, n_jobs=1)


def test_out_of_fold_accuracy_is_chance_on_labels_a_model_can_only_memorise() -> None:
    rng = random.Random(5)
    texts = [" ".join(f"w{rng.randrange(500)}" for _ in range(8)) for _ in range(400)]
    labels = [rng.choice("ab") for _ in texts]
    fit = train_cross_fitted(texts, labels, n_jobs=1)
    in_sample = float(np.mean(fit.model.predict(texts) == np.asarray(labels)))
    assert in_sample > 0.85  # the final model memorises its training documents
    assert 0.35 < fit.metrics["accuracy"] < 0.65  # out of fold: chance, as on new data


def test_metrics_are_those_of_the_out_of_fold_probabilities(fitted: Any) -> None:
    texts, labels, fit = fitted
    assert fit.probs.shape == (len(texts), len(fit.model.classes_))
    np.testing.assert_allclose(fit.probs.sum(axis=1), 1.0, rtol=1e-6)
    predicted = fit.model.classes_[fit.probs.argmax(axis=1)]
    assert fit.metrics["accuracy"] == round(float(np.mean(predicted == np.asarray(labels))), 4)
    assert fit.metrics["folds"] == 5
    assert fit.metrics["n_train"] + fit.metrics["n_test"] == len(texts)
    assert sum(fit.metrics["class_counts"].values()) == len(texts)


def test_held_out_accuracy_matches_fresh_documents(fitted: Any) -> None:
    _, _, fit = fitted
    fresh, fresh_labels = _docs(1500, seed=12)
    accuracy = float(np.mean(fit.model.predict(fresh) == np.asarray(fresh_labels)))
    assert abs(fit.metrics["accuracy"] - accuracy) < 0.04


def test_reference_oov_share_matches_fresh_documents() -> None:
    texts, labels = _zipf_docs(2000, seed=1)
    fit = train_cross_fitted(texts, labels, n_jobs=1)
    reference, _ = reference_profile(fit.model, texts, labels, fit.metrics,
                                     held_out=(fit.probs, fit.oov))
    fresh, fresh_labels = _zipf_docs(2000, seed=2)
    unseen, _ = reference_profile(fit.model, fresh, fresh_labels)
    in_sample, _ = reference_profile(fit.model, texts, labels)
    assert reference.oov_total == int(fit.oov.sum())
    assert 0.85 < reference.oov_share / unseen.oov_share < 1.2
    assert in_sample.oov_share < 0.8 * unseen.oov_share  # what cross-fitting corrects


def test_reference_scores_match_fresh_documents(fitted: Any) -> None:
    texts, labels, fit = fitted
    reference, _ = reference_profile(fit.model, texts, labels, fit.metrics,
                                     held_out=(fit.probs, fit.oov))
    fresh, fresh_labels = _docs(1500, seed=12)
    unseen, _ = reference_profile(fit.model, fresh, fresh_labels)
    in_sample, _ = reference_profile(fit.model, texts, labels)
    mean_score = reference.top_probability_sum / reference.n
    assert abs(mean_score - unseen.top_probability_sum / unseen.n) < 0.03
    assert in_sample.top_probability_sum / in_sample.n > mean_score + 0.03


def test_fold_oov_counts_use_the_vocabulary_of_a_model_that_did_not_see_the_text(
        fitted: Any) -> None:
    texts, _, fit = fitted
    final_oov = text_features(fit.model, texts).oov
    assert fit.oov.sum() > final_oov.sum()
    # The tokens too: each document counted once per token its fold model lacks, and
    # the reference keeps that sketch, not the final model's.
    assert 0 < fit.oov_tokens.pairs <= fit.oov.sum()
    reference, _ = reference_profile(fit.model, texts, None, held_out=fit.held_out)
    stored = Profile.from_json(reference.to_json()).oov_tokens
    assert stored is not None and stored.frequent() == fit.oov_tokens.frequent()


def test_parallel_folds_give_the_sequential_result() -> None:
    texts, labels = _docs(400, seed=21)
    one = train_cross_fitted(texts, labels, n_jobs=1)
    two = train_cross_fitted(texts, labels, n_jobs=2)
    np.testing.assert_array_equal(one.probs, two.probs)
    np.testing.assert_array_equal(one.oov, two.oov)
    assert one.metrics == two.metrics
    np.testing.assert_array_equal(one.model.predict_proba(texts[:50]),
                                  two.model.predict_proba(texts[:50]))


def test_a_class_rarer_than_the_folds_still_gets_out_of_fold_probabilities() -> None:
    texts, labels = _docs(200, seed=31)
    texts += ["zebra giraffe lion", "zebra lion savanna"]
    labels += ["safari", "safari"]
    fit = train_cross_fitted(texts, labels, n_jobs=1)
    assert "safari" in fit.model.classes_
    np.testing.assert_allclose(fit.probs.sum(axis=1), 1.0, rtol=1e-6)


@pytest.mark.parametrize("counts", [{"a": 40, "b": 1}, {"a": 30, "b": 1, "c": 1}])
def test_a_fold_left_with_one_class_is_refused_naming_the_classes_it_lacks(
        counts: dict[str, int]) -> None:
    """Two classes, one with a single document: some fold holds out all of it and would
    be fitted on one class. The error names that class and its count; a class with one
    document among others that can be fitted trains (the test above). Three classes of
    which two have one document each: refused only when one fold holds out both."""
    labels = [c for c, n in counts.items() for _ in range(n)]
    texts = [f"{label} text number {i}" for i, label in enumerate(labels)]
    try:
        fit = train_cross_fitted(texts, labels, n_jobs=1)
    except ValueError as exc:
        assert re.search(r"fold \d of 5 would be fitted on one class: it holds out every "
                         r"document of 'b' \(1\)", str(exc)), exc
        assert len(counts) == 2 or "'c' (1)" in str(exc)
    else:
        assert len(counts) == 3 and set(fit.model.classes_) == {"a", "b", "c"}


def test_train_and_evaluate_refuses_unusable_training_sets() -> None:
    with pytest.raises(ValueError, match="two distinct labels"):
        train_and_evaluate(["a b"] * 20, ["x"] * 20)
    with pytest.raises(ValueError, match="at least 10"):
        train_and_evaluate(["a b", "c d"], ["x", "y"])
    for texts in (["", " ", "a b c"] * 7,                       # emptied, or one letter a word
                  [f"word{i} other{i}" for i in range(21)]):    # no word in two texts
        with pytest.raises(ValueError, match="no term occurs in two of the 21 training texts"):
            train_and_evaluate(texts, ["x", "y", "z"] * 7)


def test_the_penalty_follows_the_training_set_size() -> None:
    small, large = build_pipeline(300), build_pipeline(30_000)
    assert small.named_steps["clf"].alpha == pytest.approx(100 * large.named_steps["clf"].alpha)


def test_the_trained_artifact_registers_and_loads_with_its_training_record(
        fitted: Any, tmp_path: Path) -> None:
    texts, _, fit = fitted
    setattr(fit.model, TRAINING_ATTRIBUTE, training_record(texts, fit.metrics))
    registry = ModelRegistry(str(tmp_path))
    ref = registry.register("m", fit.model, preprocessing={}, source="test",
                            metrics=fit.metrics)
    loaded = registry.load(ref)
    np.testing.assert_array_equal(loaded.predict_proba(texts[:20]),
                                  fit.model.predict_proba(texts[:20]))
    record = record_of(loaded)
    assert record is not None and record["accuracy"] == fit.metrics["accuracy"]
    assert record["text_hashes"].dtype == np.uint64
    buf = io.BytesIO()
    joblib.dump(fit.model, buf, compress=3)
    _, used = load_restricted(buf.getvalue(), Policy())
    assert all(g.split(".")[0] in ("sklearn", "numpy", "joblib") for g in used), used
