"""Cross-fitting: out-of-fold predictions of the training recipe, for an honest reference.

A model scores documents it has never seen, so the reference its tranches are compared
with must describe the model on unseen documents too. ``cross_fit`` splits the labelled
documents into K stratified folds and fits the recipe K times, each time without one
fold, which that fold's model then scores: every document gets probabilities (and an
out-of-vocabulary count, with the vocabulary of a model that did not see it) from a
model of the same recipe that did not see it; the out-of-vocabulary tokens of each fold's
held-out documents are counted in a mergeable sketch (``tracking.oov``). A final fit on
every document is the model that is registered and scores. The folds and the final fit
run in parallel processes (``n_jobs``); each fits its own vectoriser on its own training
part, so no fold's vocabulary or IDF weights know its held-out documents. Every fit gets
the recipe for the whole training set (``build(n)``, e.g. its penalty), so the fold
models are as confident as the final one and their scores stand for its scores.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from models.fastpath import FastTextPipeline, unsupported_reason
from models.importance import text_features
from tracking.oov import OovTokens

_LOG = logging.getLogger(__name__)
PARALLEL_FROM = 10_000  # documents: below this, worker start-up costs more than it saves


class HeldOut(NamedTuple):
    """Per document, what a model of the same recipe that did not see it made of it."""

    probs: np.ndarray  # documents x classes
    oov: np.ndarray  # out-of-vocabulary tokens of each document
    oov_tokens: OovTokens | None = None  # those tokens, counted by documents


@dataclass
class CrossFit:
    """The model fitted on every document, and per document what a model of the same
    recipe that did not see it made of it."""

    model: Any
    probs: np.ndarray  # documents x model.classes_, out of fold
    oov: np.ndarray  # tokens of each document outside its fold model's vocabulary
    metrics: dict[str, Any] = field(default_factory=dict)
    oov_tokens: OovTokens = field(default_factory=OovTokens)  # those tokens, by documents

    @property
    def held_out(self) -> HeldOut:
        return HeldOut(self.probs, self.oov, self.oov_tokens)


def fold_indices(labels: list[str], folds: int, seed: int = 0
                 ) -> list[tuple[np.ndarray, np.ndarray]]:
    """(training, held-out) document indices of ``folds`` stratified folds; every
    document is held out exactly once."""
    from sklearn.model_selection import StratifiedKFold

    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():  # a class rarer than the folds: some folds lack it
        warnings.simplefilter("ignore", UserWarning)
        splits = list(splitter.split(np.zeros(len(labels)), labels))
    for k, (train, _) in enumerate(splits):
        if len({labels[i] for i in train}) < 2:  # a fit needs two classes
            counts = Counter(labels)
            held = sorted(set(labels) - {labels[i] for i in train})
            raise ValueError(
                f"fold {k + 1} of {folds} would be fitted on one class: it holds out every "
                f"document of {', '.join(f'{c!r} ({counts[c]})' for c in held)}; give "
                f"each class at least {folds} labelled documents (one per fold)")
    return splits


def default_jobs(n_documents: int) -> int:
    """Worker processes for the fits: every usable core, one below ``PARALLEL_FROM``."""
    if n_documents < PARALLEL_FROM:
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, cores or 1)


def _held_out(model: Any, texts: list[str]) -> HeldOut:
    """Probabilities, OOV counts and OOV tokens of ``texts`` under ``model``, as scoring
    computes them."""
    scorer = FastTextPipeline(model) if unsupported_reason(model) is None else model
    features = text_features(scorer, texts)
    probs = np.asarray(features.scorer.predict_proba(features.matrix), dtype=np.float64)
    tokens = OovTokens()
    tokens.add(features.oov_words, features.oov_rows)
    return HeldOut(probs, features.oov, tokens)


def _fit(build: Callable[[int], Any], texts: list[str], labels: list[str], fold: int,
         train: np.ndarray | None, test: np.ndarray | None) -> tuple[int, Any, float]:
    """One fit, in a worker: fold ``fold`` (its model's classes, held-out probabilities
    and OOV counts) or, for fold 0, the final model on every document."""
    started = time.perf_counter()
    model = build(len(texts))  # the final model's penalty, in every fold
    if train is None or test is None:
        model.fit(texts, labels)
        return fold, model, time.perf_counter() - started
    model.fit([texts[i] for i in train], [labels[i] for i in train])
    held = _held_out(model, [texts[i] for i in test])
    return fold, ([str(c) for c in model.classes_], held), time.perf_counter() - started


def cross_fit(build: Callable[[int], Any], texts: list[str], labels: list[str], folds: int = 5,
              seed: int = 0, n_jobs: int | None = None) -> CrossFit:
    """Fit ``build(n)`` (the recipe for the n documents) on every document and on each
    of ``folds`` stratified folds; progress is logged per fit as it finishes."""
    from joblib import Parallel, delayed

    splits = fold_indices(labels, folds, seed)
    classes = sorted(set(labels))
    column = {c: i for i, c in enumerate(classes)}
    probs = np.zeros((len(texts), len(classes)), dtype=np.float64)
    oov = np.zeros(len(texts), dtype=np.int64)
    tokens = OovTokens()
    jobs = n_jobs or default_jobs(len(texts))
    _LOG.info("fitting %d folds and the final model on %d documents, %d process(es)",
              folds, len(texts), jobs)
    tasks = [(0, None, None)] + [(k + 1, tr, te) for k, (tr, te) in enumerate(splits)]
    final = None
    results = Parallel(n_jobs=jobs, return_as="generator_unordered")(
        delayed(_fit)(build, texts, labels, k, tr, te) for k, tr, te in tasks)
    for fold, result, seconds in results:
        if fold == 0:
            final = result
            _LOG.info("final fit on %d documents: %.1f s", len(texts), seconds)
            continue
        fold_classes, held = result
        test = splits[fold - 1][1]
        probs[np.ix_(test, [column[c] for c in fold_classes])] = held.probs
        oov[test] = held.oov
        tokens.merge(held.oov_tokens)
        _LOG.info("fit fold %d/%d: %d documents, %d held out: %.1f s", fold, folds,
                  len(splits[fold - 1][0]), len(test), seconds)
    assert final is not None
    return CrossFit(final, probs, oov, _metrics(classes, probs, labels, splits), tokens)


def _metrics(classes: list[str], probs: np.ndarray, labels: list[str],
             splits: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, Any]:
    """Accuracy and macro-F1 of the out-of-fold predictions over every document."""
    from sklearn.metrics import accuracy_score, f1_score

    predicted = np.asarray(classes)[probs.argmax(axis=1)]
    return {
        "accuracy": round(float(accuracy_score(labels, predicted)), 4),
        "macro_f1": round(float(f1_score(labels, predicted, average="macro")), 4),
        "evaluation": f"{len(splits)}-fold cross-fitted",
        "folds": len(splits),
        "n_train": len(splits[0][0]),  # per fold: documents fitted on
        "n_test": len(splits[0][1]),  # and held out
        "n_documents": len(labels),
        "class_counts": dict(sorted(Counter(labels).items())),
    }
