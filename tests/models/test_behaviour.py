"""A scored batch's statistics and a model's reference profile, against the model's own
predictions on the same texts."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from sklearn.metrics import f1_score

from landing.samples import make_docs
from models.behaviour import (
    FEATURES_FILE,
    PROFILE_FILE,
    batch_stats,
    reference_files,
    reference_profile,
)
from models.fastpath import FastTextPipeline
from models.importance import measure_for, text_features
from tracking.profile import Profile

DOCS = list(make_docs(300, seed=21, prefix="p"))
TEXTS, LABELS = [d["text"] for d in DOCS], [d["label"] for d in DOCS]


def test_batch_stats_describe_only_the_kept_records(trained_model: Any) -> None:
    model = FastTextPipeline(trained_model)
    features = text_features(model, TEXTS[:50])
    keep = np.ones(50, bool)
    keep[[4, 9]] = False
    probs = trained_model.predict_proba([t for t, k in zip(TEXTS[:50], keep) if k])
    classes = list(trained_model.classes_)
    true = np.asarray([classes.index(y) for y, k in zip(LABELS[:50], keep) if k])
    lengths = np.asarray([len(t) for t, k in zip(TEXTS[:50], keep) if k])
    stats = batch_stats(probs, features, keep, lengths, true, measure_for(model, []))
    assert stats.predicted.tolist() == probs.argmax(axis=1).tolist()
    assert np.allclose(stats.scores, probs.max(axis=1))
    assert stats.tokens.tolist() == features.tokens[keep].tolist()
    assert stats.importance is not None and stats.importance_rows == 48


def test_the_reference_profile_is_the_models_predictions_and_accuracy(
        trained_model: Any) -> None:
    profile, names = reference_profile(trained_model, TEXTS, LABELS)
    predicted = trained_model.predict(TEXTS)
    classes = [str(c) for c in trained_model.classes_]
    assert profile.n == len(TEXTS) and profile.classes == classes
    assert profile.class_counts.tolist() == [int((predicted == c).sum()) for c in classes]
    assert profile.reference["accuracy"] == float(np.mean(predicted == np.asarray(LABELS)))
    assert profile.reference["macro_f1"] == pytest.approx(
        f1_score(LABELS, predicted, labels=classes, average="macro", zero_division=0))
    assert profile.labelled == len(TEXTS)
    assert names == trained_model.named_steps["tfidf"].get_feature_names_out().tolist()
    recorded, _ = reference_profile(trained_model, TEXTS, None, {"accuracy": 0.5})
    assert recorded.reference.keys() == {"accuracy", "importance_kind", "importance_by_class"}
    assert recorded.reference["accuracy"] == 0.5
    assert recorded.reference["importance_kind"] == "linear"
    assert recorded.labelled == 0


def test_the_reference_ranks_features_per_class_by_coefficient_times_mean_tfidf(
        trained_model: Any) -> None:
    profile, names = reference_profile(trained_model, TEXTS, LABELS)
    mean_tfidf = np.asarray(trained_model.named_steps["tfidf"].transform(TEXTS).mean(axis=0))
    coef = np.abs(trained_model.steps[-1][1].coef_)
    by_class = profile.reference["importance_by_class"]
    assert list(by_class) == [str(c) for c in trained_model.classes_]
    for k, c in enumerate(by_class):
        expected = coef[k] * mean_tfidf.ravel()
        top = np.argsort(-expected, kind="stable")[:20]
        assert [i for i, _, _ in by_class[c]] == top.tolist()
        assert [n for _, n, _ in by_class[c]] == [names[i] for i in top]
        assert [v for _, _, v in by_class[c]] == pytest.approx(expected[top].tolist())


def test_reference_files_round_trip_with_named_top_features(trained_model: Any) -> None:
    files = reference_files(trained_model, [*TEXTS, ""], [*LABELS, "billing"],
                            empty_share=0.01)
    data = json.loads(files[PROFILE_FILE])
    back = Profile.from_json(data)
    assert back.n == len(TEXTS)  # the emptied text is left out
    assert back.reference["empty_share"] == 0.01
    top = back.reference["importance_top"]
    names = files[FEATURES_FILE].decode().split("\n")
    assert len(top) == 200 and all(names[i] == name for i, name, _ in top)
    assert [v for _, _, v in top] == sorted((v for _, _, v in top), reverse=True)


def test_a_reference_partly_labelled_measures_accuracy_on_its_labelled_texts(
        trained_model: Any) -> None:
    """One unlabelled reference text (an empty label) does not throw the others' labels
    away: accuracy is the model's on the labelled ones."""
    labels = [y if i % 3 else "" for i, y in enumerate(LABELS)]
    profile, _ = reference_profile(trained_model, TEXTS, labels)
    labelled = [i for i, y in enumerate(labels) if y]
    predicted = trained_model.predict([TEXTS[i] for i in labelled])
    assert profile.labelled == len(labelled)
    assert profile.reference["accuracy"] == float(np.mean(
        predicted == np.asarray([LABELS[i] for i in labelled])))


def test_a_reference_leaves_out_texts_whose_probabilities_are_not_finite(
        trained_model: Any) -> None:
    """As scoring dead-letters them: a model with a NaN weight gives a profile of the
    other texts, with finite figures."""
    import copy

    model = copy.deepcopy(trained_model)
    vocabulary = model.named_steps["tfidf"].vocabulary_
    word = max(vocabulary, key=lambda w: sum(w in t.split() for t in TEXTS[:100]))
    model.steps[-1][1].coef_[:, vocabulary[word]] = np.nan
    broken = [word in t.lower().split() for t in TEXTS]
    assert 0 < sum(broken) < len(TEXTS)
    profile, _ = reference_profile(model, TEXTS, LABELS)
    assert profile.n == len(TEXTS) - sum(broken)
    assert np.isfinite(profile.score.quantiles(np.array([0.1, 0.5, 0.9]))).all()
    assert profile.labelled == len(TEXTS) - sum(broken)


class _HalfDistributions:
    """A classifier whose every other row is not a probability distribution (sums to 2),
    wrapping a fitted pipeline."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.classes_ = inner, inner.classes_

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        out = np.array(self.inner.predict_proba(texts), dtype=np.float64)
        out[::2] *= 2
        return out


def test_a_reference_leaves_out_rows_scoring_would_dead_letter(trained_model: Any) -> None:
    """Rows that are not distributions are dead letters at scoring: the reference counts
    only the others, so it describes what scoring profiles."""
    profile, _ = reference_profile(_HalfDistributions(trained_model), TEXTS[:40])
    assert int(profile.class_counts.sum()) == 20
