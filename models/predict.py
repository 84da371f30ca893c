"""Calling a model on a batch of texts: failure isolation, a time limit, top-k columns.

``predict_with_isolation`` runs one ``predict_proba`` per batch and, when the call
raises, returns non-finite rows or exceeds its time limit, bisects the batch so that
only the texts that fail on their own are reported. With a ``TimeLimit`` each call runs
in a child process that is killed when its limit passes (``models.deadline``); a call
on n texts may take ``n * per_record`` seconds (at least ``minimum``), so a hung text
costs about twice the limit of its batch before it is isolated: the batch's limit,
then half of it for the half that holds it, and so on down to the one text.
``top_k_columns`` turns probabilities into the top label, its score and the top-k list
as JSON. ``warm_input_validation`` does once, in a process that forks workers, what
scikit-learn's first input check in each of them would.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.deadline import call_with_deadline


@dataclass(frozen=True)
class TimeLimit:
    per_record: float  # seconds per text
    minimum: float = 0.25  # seconds for any call, whatever its size

    def for_records(self, n: int) -> float:
        return max(self.minimum, n * self.per_record)


class CallTimedOut(Exception):
    """The model did not return within its time limit (the call was killed)."""


def _call(model: Any, texts: Any, limit: TimeLimit | None) -> Any:
    if limit is None:
        return model.predict_proba(texts)
    n = texts.shape[0] if hasattr(texts, "shape") else len(texts)
    seconds = limit.for_records(n)
    outcome = call_with_deadline(lambda: model.predict_proba(texts), seconds)
    if outcome.status == "died":  # e.g. a library's lock copied mid-use by the fork: again
        outcome = call_with_deadline(lambda: model.predict_proba(texts), seconds)
    if outcome.status == "timeout":
        raise CallTimedOut(f"timeout: scoring {n} record(s) {outcome.message} "
                           f"(limit {limit.per_record * 1000:.6g} ms per record)")
    if outcome.status in ("error", "died"):
        raise RuntimeError(outcome.message)
    return outcome.value


def warm_input_validation() -> None:
    """Fill the process-wide cache scikit-learn's input validation fills on its first
    call, without calling a model: narwhals' search of every installed distribution's
    entry points for dataframe plugins (10-20 ms), which each worker forked afterwards
    would otherwise repeat on its first batch. Starts no thread, so a process may fork
    after it."""
    from sklearn.base import BaseEstimator
    from sklearn.utils.validation import validate_data

    validate_data(BaseEstimator(), X=np.zeros((1, 1)), reset=True)


def predict_with_isolation(
    model: Any, texts: Any, limit: TimeLimit | None = None
) -> tuple[np.ndarray, dict[int, str]]:
    """``predict_proba`` on all texts (a list, or the rows of a feature matrix); on
    failure bisect to the failing records.

    Returns (probabilities with NaN rows for failures, {row index: error}); the error
    of a text that exceeds its time limit on its own starts with ``timeout``.
    """
    errors: dict[int, str] = {}
    n_classes = len(model.classes_)
    n = texts.shape[0] if hasattr(texts, "shape") else len(texts)
    probs = np.full((n, n_classes), np.nan, dtype=np.float64)

    def attempt(lo: int, hi: int) -> None:
        try:
            out = np.asarray(_call(model, texts[lo:hi], limit), dtype=np.float64)
            if out.shape != (hi - lo, n_classes):
                raise ValueError(f"predict_proba returned shape {out.shape}")
            bad = ~np.isfinite(out).all(axis=1)
            if bad.any() and hi - lo > 1:
                raise ValueError("non-finite probabilities")
            probs[lo:hi] = out
            for i in np.flatnonzero(bad):
                errors[lo + int(i)] = "model returned non-finite probabilities"
            for i in np.flatnonzero(~bad & ~distributions(out)):
                errors[lo + int(i)] = (f"model returned probabilities that are not a "
                                       f"distribution: {np.round(out[i], 6).tolist()} (each "
                                       "in [0, 1], summing to 1)")
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - isolated, not fatal (a
            # worker is stopped by its signal's default action, never by a SystemExit)
            if hi - lo == 1:
                errors[lo] = (str(exc) if isinstance(exc, CallTimedOut)
                              else f"{type(exc).__name__}: {exc}")[:500]
                return
            mid = (lo + hi) // 2
            attempt(lo, mid)
            attempt(mid, hi)

    if n:
        attempt(0, n)
    return probs, errors


PROBABILITY_TOLERANCE = 1e-4  # float32 models: about 100 ulps of 1


def distributions(out: np.ndarray) -> np.ndarray:
    """Which rows are probability distributions: each value in [0, 1] and the row
    summing to 1, within ``PROBABILITY_TOLERANCE``."""
    tol = PROBABILITY_TOLERANCE
    ok: np.ndarray = ((out >= -tol).all(axis=1) & (out <= 1 + tol).all(axis=1)
                      & (np.abs(out.sum(axis=1) - 1.0) <= tol))
    return ok


def top_k_columns(
    probs: np.ndarray, classes: Sequence[Any], k: int
) -> tuple[list[str], np.ndarray, list[str]]:
    """Top label, its score, and top-k as a JSON list of [label, score] per row.

    The JSON is the text ``json.dumps`` writes for each row, assembled from each
    class's pre-encoded ``[label, `` and the ``repr`` of each rounded score (what
    ``json.dumps`` writes for a float): every cell of the batch in one pass, then one
    ``%`` formatting per row.
    """
    k = min(k, probs.shape[1])
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    top_scores = np.take_along_axis(probs, order, axis=1)
    names = [str(c) for c in classes]
    heads = [f"[{json.dumps(n, ensure_ascii=False)}, " for n in names]
    labels = [names[i] for i in order[:, 0].tolist()]
    scores = top_scores[:, 0]
    cells = iter(list(map(operator.add, map(heads.__getitem__, order.ravel().tolist()),
                          map(repr, np.round(top_scores, 6).ravel().tolist()))))
    row = "[" + "], ".join(["%s"] * k) + "]]"
    top_k = [row % cells_of_row for cells_of_row in zip(*[cells] * k)]
    return labels, scores, top_k
