"""Profiles of a model's behaviour on texts: per scored batch, and the reference.

``batch_stats`` turns one scored batch into what it adds to a tranche's profile
(``tracking.profile``). ``reference_profile`` scores a reference set (the held-out split
at ``beamscore train``, or ``models register --reference``) the same way and keeps the
figures a tranche is compared with: its profile, the top features by importance, and
accuracy / macro-F1 where labels exist.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from models.budget import ModelCalls
from models.crossfit import HeldOut
from models.fastpath import FastTextPipeline, unsupported_reason
from models.importance import (
    ImportanceMeasure,
    TextFeatures,
    candidate_columns,
    class_importance,
    feature_names,
    importance_weights,
    measure_for,
    text_features,
)
from models.predict import distributions
from tracking.profile import UNKNOWN_LABEL, BatchStats, Profile, has_label, label_reader

_LOG = logging.getLogger(__name__)


def batch_stats(probs: np.ndarray, features: TextFeatures, keep: np.ndarray,
                lengths: np.ndarray, true: np.ndarray,
                measure: ImportanceMeasure | None, doc_ids: Any = None,
                calls: ModelCalls | None = None) -> BatchStats:
    """``probs``: of the scored records; ``keep``: which of the batch's records those
    are; ``true``: class index of their true labels (-1 where unknown); ``doc_ids``: the
    scored records' ids, examples of their out-of-vocabulary tokens; ``calls``: the
    batch's calls into model code (``models.budget``), permutation importance's among
    them."""
    importance, rows, skipped = None, 0, False
    if measure is not None and not isinstance(features.matrix, list):
        importance, rows, skipped = measure.of_batch(features, keep, calls)
    scored = np.cumsum(keep) - 1  # a batch record's index among the scored ones
    kept = keep[features.oov_rows] if len(features.oov_rows) else np.zeros(0, bool)
    return BatchStats(predicted=probs.argmax(axis=1), scores=probs.max(axis=1),
                      lengths=lengths, tokens=features.tokens[keep], oov=features.oov[keep],
                      true=true, importance=importance, importance_rows=rows,
                      importance_skipped=int(skipped),
                      oov_words=features.oov_words if kept.all() else
                      [w for w, k in zip(features.oov_words, kept.tolist()) if k],
                      oov_rows=scored[features.oov_rows[kept]], doc_ids=doc_ids)


REFERENCE_PERMUTATION_ROWS, REFERENCE_COLUMNS = 1000, 200


def reference_profile(model: Any, texts: list[str], labels: list[str] | None = None,
                      metrics: dict[str, Any] | None = None, scored_by: Any = None,
                      held_out: tuple[np.ndarray, np.ndarray] | HeldOut | None = None
                      ) -> tuple[Profile, list[str]]:
    """The reference profile of ``model`` on preprocessed ``texts`` (and their labels),
    and the model's feature names ([] for a model without a vocabulary). ``scored_by``:
    a model of the same recipe that has not seen ``texts`` (the training split's), whose
    scores stand for the model's on unseen data; importance is ``model``'s: linear, or
    permutation importance of the 200 heaviest columns on 1,000 of the texts.
    ``held_out``: per text, the probabilities and OOV count given by a model of the same
    recipe that did not see it (``models.crossfit``), used instead of scoring, and the
    sketch of those OOV tokens."""
    judge = scored_by if scored_by is not None else model
    scorer = FastTextPipeline(judge) if unsupported_reason(judge) is None else judge
    own = FastTextPipeline(model) if unsupported_reason(model) is None else model
    classes = [str(c) for c in model.classes_]
    profile = Profile(classes=classes)
    measure: ImportanceMeasure | None = None
    read = label_reader(model.classes_)  # labels read as scoring reads them
    index = {read(c): i for i, c in enumerate(model.classes_)}
    tfidf_sum: np.ndarray | None = None  # linear models: per feature, over every text
    dropped = 0  # texts whose probabilities are not finite
    for start in range(0, len(texts), 4096):
        part = texts[start:start + 4096]
        features = text_features(scorer, part)
        if held_out is None:
            probs = np.asarray(features.scorer.predict_proba(features.matrix), np.float64)
        else:
            probs = held_out[0][start:start + 4096]
            features.oov = held_out[1][start:start + 4096]
            features.oov_rows, features.oov_words = np.zeros(0, np.int64), []
        if scored_by is not None:  # importance from the final model's own features
            features = text_features(own, part)
        if start == 0:
            columns: Any = [] if isinstance(features.matrix, list) else \
                candidate_columns(features.matrix, REFERENCE_COLUMNS)
            measure = measure_for(model, columns, REFERENCE_PERMUTATION_ROWS)
        elif measure is not None and measure.kind == "permutation":
            measure = None  # the first texts are the permutation sample
        if measure is not None and measure.kind == "linear":
            column_sum = np.asarray(features.matrix.sum(axis=0), np.float64).ravel()
            tfidf_sum = column_sum if tfidf_sum is None else tfidf_sum + column_sum
        # Labels compared as scoring compares them; one outside the classes is an error.
        true = np.asarray([index.get(read(v), UNKNOWN_LABEL) if has_label(v) else -1
                           for v in labels[start:start + 4096]]
                          if labels else [-1] * len(part), dtype=np.int64)
        lengths = np.asarray([len(t) for t in part])
        # The rows scoring scores: the others (not finite, not a distribution) are dead
        # letters there.
        keep: np.ndarray = np.asarray(np.isfinite(probs).all(axis=1))
        keep[keep] = distributions(probs[keep])
        if not keep.all():
            dropped += int((~keep).sum())
            probs, lengths, true = probs[keep], lengths[keep], true[keep]
        profile.add(batch_stats(probs, features, keep, lengths, true, measure))
    if dropped:
        _LOG.warning("%d of %d reference texts got probabilities that are not finite; "
                     "the profile leaves them out, as scoring dead-letters them", dropped,
                     len(texts))
    if held_out is not None:
        profile.oov_tokens = HeldOut(*held_out).oov_tokens
        if profile.oov_tokens is None:
            _LOG.warning("the held-out figures carry no out-of-vocabulary token sketch: "
                         "the reference cannot tell new tokens from old ones")
    if measure is not None or profile.importance_rows:
        profile.reference["importance_kind"] = "linear" if importance_weights(model) is not \
            None else "permutation"
    names = feature_names(model) or []
    if tfidf_sum is not None:
        profile.reference["importance_by_class"] = class_importance(
            model, tfidf_sum / max(1, len(texts)), names)
    _add_accuracy(profile, metrics)
    return profile, names


def _add_accuracy(profile: Profile, metrics: dict[str, Any] | None) -> None:
    """Accuracy and macro-F1 of the reference: the training split's, else measured on
    the labelled reference texts."""
    if metrics:
        profile.reference.update({k: metrics[k] for k in ("accuracy", "macro_f1")
                                  if k in metrics})
    elif profile.labelled:
        from tracking.statistics import macro_f1  # scipy: only where a reference is made

        profile.reference["accuracy"] = float(np.trace(profile.confusion) / profile.labelled)
        profile.reference["macro_f1"] = macro_f1(profile.confusion)


PROFILE_FILE, FEATURES_FILE = "profile.json", "features.txt"


def reference_files(model: Any, texts: list[str], labels: list[str] | None,
                    metrics: dict[str, Any] | None = None, empty_share: float = 0.0,
                    scored_by: Any = None,
                    held_out: tuple[np.ndarray, np.ndarray] | HeldOut | None = None
                    ) -> dict[str, bytes]:
    """The registry files of a model's reference: ``profile.json`` and, for a model with a
    vocabulary, ``features.txt`` (one feature name per column)."""
    import json

    kept = [(t, labels[i] if labels else None) for i, t in enumerate(texts) if t]
    rows = [i for i, t in enumerate(texts) if t]  # of held_out
    profile, names = reference_profile(model, [t for t, _ in kept],
                                       [str(y) for _, y in kept] if labels else None, metrics,
                                       scored_by, None if held_out is None else
                                       HeldOut(held_out[0][rows], held_out[1][rows],
                                               HeldOut(*held_out).oov_tokens))
    profile.reference["empty_share"] = empty_share
    files = {PROFILE_FILE: json.dumps(profile.to_json(names=names)).encode()}
    if names:
        files[FEATURES_FILE] = "\n".join(n.replace("\n", " ") for n in names).encode()
    return files
