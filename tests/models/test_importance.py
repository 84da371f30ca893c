"""What tracking takes from a model: the features of a batch (the same on the fast path
and through scikit-learn), token and out-of-vocabulary counts, and feature importance:
|coefficient| x tf-idf for linear models, scikit-learn's permutation importance otherwise."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.inspection import permutation_importance
from sklearn.pipeline import Pipeline

from landing.samples import make_docs
from models.fastpath import FastTextPipeline
from models.importance import (
    ImportanceMeasure,
    candidate_columns,
    feature_names,
    importance_weights,
    measure_for,
    permutation_drops,
    text_features,
)
from tests.doubles import PoisonedPipeline

TEXTS = [d["text"] for d in make_docs(120, seed=11, prefix="i")]


@pytest.fixture(scope="module")
def forest() -> Pipeline:
    """A vectoriser + a non-linear classifier (no coefficients) on a small vocabulary."""
    docs = list(make_docs(400, seed=12, prefix="f"))
    model = Pipeline([("tfidf", TfidfVectorizer(max_features=60)),
                      ("clf", RandomForestClassifier(n_estimators=15, random_state=0))])
    return model.fit([d["text"] for d in docs], [d["label"] for d in docs])


def test_fast_path_and_scikit_learn_give_the_same_features_and_counts(
        trained_model: Any) -> None:
    texts = [*TEXTS[:20], "zzqx unknownword " + TEXTS[0], "Ünïcode Wörter ZZQX " + TEXTS[1]]
    fast, slow = text_features(FastTextPipeline(trained_model), texts), \
        text_features(trained_model, texts)
    assert abs(fast.matrix - slow.matrix).max() < 1e-6
    assert fast.tokens.tolist() == slow.tokens.tolist()
    assert fast.oov.tolist() == slow.oov.tolist()
    assert slow.oov[-2] == slow.oov[0] + 2  # the two made-up words
    # The out-of-vocabulary tokens themselves, each with its text, as the vectoriser
    # tokenises (lower-cased, its token pattern), on the ASCII and the Unicode path.
    assert sorted(zip(fast.oov_rows.tolist(), fast.oov_words)) == \
        sorted(zip(slow.oov_rows.tolist(), slow.oov_words))
    assert {"zzqx", "unknownword"} <= {w for r, w in zip(fast.oov_rows, fast.oov_words)
                                        if r == 20}
    assert {"ünïcode", "wörter", "zzqx"} <= {w for r, w in zip(fast.oov_rows, fast.oov_words)
                                             if r == 21}
    assert np.allclose(fast.scorer.predict_proba(fast.matrix), trained_model.predict_proba(texts))


def test_an_opaque_model_is_scored_on_its_texts_and_has_no_importance(
        trained_model: Any) -> None:
    opaque = PoisonedPipeline(trained_model)
    features = text_features(opaque, TEXTS[:5])
    assert features.matrix == TEXTS[:5] and features.scorer is opaque
    assert features.tokens.tolist() == [len(t.split()) for t in TEXTS[:5]]
    assert importance_weights(opaque) is None and feature_names(opaque) is None
    assert measure_for(opaque, [0, 1]) is None


def test_linear_importance_is_the_largest_abs_coefficient_times_tfidf(
        trained_model: Any) -> None:
    weights = importance_weights(trained_model)
    coef = trained_model.named_steps["clf"].coef_
    assert weights is not None and np.allclose(weights, np.abs(coef).max(axis=0))
    measure = measure_for(trained_model, [])
    assert isinstance(measure, ImportanceMeasure) and measure.kind == "linear"
    features = text_features(trained_model, TEXTS)
    keep = np.arange(len(TEXTS)) % 3 != 0
    total, rows, skipped = measure.of_batch(features, keep)
    x = trained_model.named_steps["tfidf"].transform(TEXTS).toarray()[keep]
    assert rows == keep.sum() and not skipped
    assert np.allclose(total, (np.abs(coef)[None, :, :] * x[:, None, :]).max(axis=1).sum(0))


def test_permutation_drops_are_scikit_learns_permutation_importance(forest: Pipeline) -> None:
    assert importance_weights(forest) is None
    x = forest.named_steps["tfidf"].transform(TEXTS)
    clf = forest.named_steps["clf"]
    columns = candidate_columns(x, 12)
    mass = np.asarray(x.sum(axis=0)).ravel()
    assert sorted(mass[columns].tolist()) == sorted(np.sort(mass)[-12:].tolist())
    drops = permutation_drops(clf, x, columns)
    own = np.argmax(clf.predict_proba(x), axis=1)

    def confidence(estimator: Any, data: Any, y: Any) -> float:
        return float(np.mean(estimator.predict_proba(data)[np.arange(len(y)), y]))

    dense = x.toarray()
    reference = permutation_importance(clf, dense, own, scoring=confidence, n_repeats=1,
                                       random_state=0).importances_mean
    assert np.allclose(drops, reference[columns])
    assert drops.max() > 0.01  # the forest uses its most frequent words


def test_a_non_linear_model_gets_permutation_importance_on_sampled_rows(
        forest: Pipeline) -> None:
    measure = measure_for(forest, [3, 7, 11], rows=16)
    assert measure is not None and measure.kind == "permutation"
    features = text_features(forest, TEXTS)
    keep = np.ones(len(TEXTS), bool)
    keep[:10] = False
    total, rows, skipped = measure.of_batch(features, keep)
    assert rows == 16 and total.shape == (features.matrix.shape[1],) and not skipped
    assert set(np.flatnonzero(total).tolist()) <= {3, 7, 11}
    assert measure_for(forest, []) is None  # no reference columns: nothing to permute
