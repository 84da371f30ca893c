"""What tracking needs from a model: features of a batch, and feature importance.

``text_features`` vectorises a batch once (the fast path's vectoriser when the model
has one) and returns the matrix the classifier scores, the tokens of each text and how
many are not in the vocabulary, and those tokens (each with its text); scoring then runs
the classifier on that matrix, so tracking costs no second featurisation.

``measure_for`` picks the importance measure of a model with a vectoriser; a batch's
contribution is a per-feature sum over some of its rows, so contributions add up
across batches and workers into a tranche's mean importance:

- linear (vectoriser + a classifier with ``coef_``): the importance of feature f in a
  record is |coefficient| x tf-idf, the largest over classes, i.e. ``weights[f] * x[f]``;
  every scored row counts.
- otherwise: scikit-learn's permutation importance, label-free: how much the
  probability of each row's predicted class drops on average when the column is
  permuted across the rows, for given columns (the reference's top features) on an
  evenly spaced sample of each batch's rows.

A model without a vectoriser (texts in, probabilities out) has no importance.
``feature_names`` names the columns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from models.budget import ModelCalls
from models.fastpath import FastTextPipeline


@dataclass
class TextFeatures:
    matrix: Any  # what ``scorer`` takes (a sparse matrix), or the texts themselves
    tokens: np.ndarray
    oov: np.ndarray
    scorer: Any  # has predict_proba(matrix)
    oov_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # the text
    oov_words: list[str] = field(default_factory=list)  # of each out-of-vocabulary token


def _pipeline(model: Any) -> Any:
    return model.model if isinstance(model, FastTextPipeline) else model


def _vectorizer(model: Any) -> Any:
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.pipeline import Pipeline

    pipeline = _pipeline(model)
    if isinstance(pipeline, Pipeline) and len(pipeline.steps) >= 2 and \
            isinstance(pipeline.steps[0][1], CountVectorizer):
        return pipeline.steps[0][1]
    return None


def text_features(model: Any, texts: list[str]) -> TextFeatures:
    if isinstance(model, FastTextPipeline):
        x, tokens, oov, oov_rows, oov_words = model.transform_and_tokens(texts)
        return TextFeatures(x, tokens, oov, model.classifier, oov_rows, oov_words)
    vec = _vectorizer(model)
    if vec is None:  # an opaque model: whitespace tokens, vocabulary unknown
        tokens = np.fromiter((len(t.split()) for t in texts), np.int64, len(texts))
        return TextFeatures(texts, tokens, np.zeros(len(texts), np.int64), model)
    split, prepare, vocabulary = vec.build_tokenizer(), vec.build_preprocessor(), \
        vec.vocabulary_
    words = [split(prepare(t)) for t in texts]
    tokens = np.fromiter(map(len, words), np.int64, len(texts))
    unknown = [(i, w) for i, ws in enumerate(words) for w in ws if w not in vocabulary]
    rows = np.fromiter((i for i, _ in unknown), np.int64, len(unknown))
    return TextFeatures(vec.transform(texts), tokens, np.bincount(rows, minlength=len(texts)),
                        _pipeline(model)[1:], rows, [w for _, w in unknown])


def features_within(model: Any, texts: list[str], calls: ModelCalls) -> TextFeatures:
    """``text_features`` computed under the batch's ``calls`` (``models.budget``): a
    vectoriser of the model's own (a tokenizer, a preprocessor) runs third-party code
    that may hang or crash like its ``predict_proba``. Raises ``RuntimeError`` when the
    call timed out, failed or died."""
    def parts() -> tuple[Any, ...]:
        f = text_features(model, texts)
        return f.matrix, f.tokens, f.oov, f.oov_rows, f.oov_words

    outcome = calls.run(parts, len(texts))
    if outcome.status != "ok":
        raise RuntimeError(f"featurisation {outcome.status}: {outcome.message}")
    matrix, tokens, oov, oov_rows, oov_words = outcome.value
    scorer = model if _vectorizer(model) is None else _pipeline(model)[1:]
    return TextFeatures(matrix, tokens, oov, scorer, oov_rows, oov_words)


def importance_weights(model: Any) -> np.ndarray | None:
    """max over classes of |coefficient| per feature, for vectoriser + linear models."""
    vec = _vectorizer(model)
    if vec is None:
        return None
    estimator = _pipeline(model).steps[-1][1]
    coef = getattr(estimator, "coef_", None)
    if coef is None or len(_pipeline(model).steps) != 2:
        return None
    weights: np.ndarray = np.abs(np.asarray(coef, dtype=np.float64)).max(axis=0)
    return weights if weights.shape[0] == len(vec.vocabulary_) else None


def class_importance(model: Any, mean_tfidf: np.ndarray, names: list[str], top: int = 20
                     ) -> dict[str, list[list[Any]]]:
    """Per class of a vectoriser + linear model: its ``top`` features by |coefficient| x
    mean tf-idf, as [column, name, value] (a binary model's one row of coefficients
    serves both classes)."""
    coef = np.abs(np.asarray(_pipeline(model).steps[-1][1].coef_, dtype=np.float64))
    classes = [str(c) for c in model.classes_]
    if coef.shape[0] == 1 and len(classes) == 2:
        coef = np.vstack([coef, coef])
    out = {}
    for c, row in zip(classes, coef):
        values = row * mean_tfidf
        best = np.argsort(-values, kind="stable")[:top]
        out[c] = [[int(i), names[i] if i < len(names) else str(i), float(values[i])]
                  for i in best]
    return out


def feature_names(model: Any) -> list[str] | None:
    vec = _vectorizer(model)
    return None if vec is None else [str(n) for n in vec.get_feature_names_out()]


def candidate_columns(matrix: Any, k: int = 200) -> np.ndarray:
    """The ``k`` columns of ``matrix`` with the largest total weight (those present in
    the most rows, strongly): where a permutation can change anything."""
    mass = np.asarray(matrix.sum(axis=0)).ravel()
    order = np.argsort(-mass, kind="stable")[:k]
    return np.sort(order[mass[order] > 0])


class _ColumnView:
    """``classifier`` seen through a dense block of some columns of ``matrix``: the
    other columns of each row are held fixed, so permuting a column of the block is
    permuting that column of the full matrix (what ``permutation_importance`` needs,
    without densifying every column)."""

    def __init__(self, classifier: Any, matrix: Any, columns: np.ndarray):
        self._classifier = classifier
        width = matrix.shape[1]
        mask = np.ones(width, dtype=matrix.dtype)
        mask[columns] = 0
        self._rest = sp.csr_matrix(matrix @ sp.diags(mask))
        self._place = sp.csr_matrix(
            (np.ones(len(columns), dtype=matrix.dtype), (np.arange(len(columns)), columns)),
            shape=(len(columns), width))

    def fit(self, *args: Any) -> _ColumnView:  # scikit-learn's scorers expect an estimator
        return self

    def predict_proba(self, block: np.ndarray) -> Any:
        return self._classifier.predict_proba(self._rest + sp.csr_matrix(block) @ self._place)


def _confidence(estimator: Any, x: Any, predicted: np.ndarray) -> float:
    """Mean probability of each row's originally predicted class."""
    probs = np.asarray(estimator.predict_proba(x))
    return float(np.mean(probs[np.arange(len(predicted)), predicted]))


def permutation_drops(classifier: Any, matrix: Any, columns: np.ndarray) -> np.ndarray:
    """Per column of ``columns``: the mean drop of the predicted class's probability when
    that column is permuted across the rows of ``matrix`` (one permutation, seed 0)."""
    from sklearn.inspection import permutation_importance

    columns = np.asarray(columns, dtype=np.int64)
    predicted = np.asarray(classifier.predict_proba(matrix)).argmax(axis=1)
    block = matrix[:, columns].toarray()
    result = permutation_importance(_ColumnView(classifier, matrix, columns), block, predicted,
                                    scoring=_confidence, n_repeats=1, random_state=0)
    drops: np.ndarray = result.importances_mean
    return drops


@dataclass(frozen=True)
class ImportanceMeasure:
    kind: str  # "linear" or "permutation"
    weights: np.ndarray | None = None  # linear: max over classes of |coefficient|
    columns: np.ndarray | None = None  # permutation: the columns permuted
    rows: int = 32  # permutation: rows of a batch permuted

    def of_batch(self, features: TextFeatures, keep: np.ndarray, calls: ModelCalls | None = None
                 ) -> tuple[np.ndarray, int, bool]:
        """The batch's importance summed over the rows it used (of the ``keep`` rows),
        one value per feature, how many rows, and whether it was skipped. Permutation
        importance calls the model (once, then once per column) as one call under the
        batch's ``calls``, limited like scoring the whole batch and within what is left of
        its time budget: one that runs out of time, fails or dies is skipped (no row
        counted)."""
        kept = np.flatnonzero(keep)
        if self.weights is not None:
            x = features.matrix[kept]
            return np.asarray(x.sum(axis=0)).ravel() * self.weights, len(kept), False
        assert self.columns is not None
        total = np.zeros(features.matrix.shape[1], dtype=np.float64)
        sample = np.unique(kept[np.linspace(0, len(kept) - 1, min(self.rows, len(kept)))
                                .astype(np.int64)]) if len(kept) else kept
        if len(sample) < 2:
            return total, 0, False
        columns, scorer, matrix = self.columns, features.scorer, features.matrix[sample]
        calls = calls or ModelCalls(None, len(keep))
        outcome = calls.run(lambda: permutation_drops(scorer, matrix, columns), calls.records)
        if outcome.status != "ok":
            return total, 0, True
        total[self.columns] = len(sample) * outcome.value
        return total, len(sample), False


def measure_for(model: Any, columns: list[int] | np.ndarray, rows: int = 32
                ) -> ImportanceMeasure | None:
    """Linear importance for a linear model; permutation importance over ``columns`` for
    another model with a vectoriser; None without a vectoriser (or without columns)."""
    weights = importance_weights(model)
    if weights is not None:
        return ImportanceMeasure("linear", weights=weights)
    if _vectorizer(model) is None or not len(columns):
        return None
    return ImportanceMeasure("permutation", columns=np.asarray(columns, np.int64), rows=rows)
