"""Calling a model on a batch of texts: failure isolation, a time limit, top-k columns.

``predict_with_isolation`` runs one ``predict_proba`` per batch and, when the call
raises, dies, returns non-finite rows or exceeds its time limit, bisects the batch so
that only the texts that fail on their own are reported. Every call goes through the
batch's ``models.budget.ModelCalls``: with a ``TimeLimit`` each runs in a child process
killed when its limit passes, a call on n texts may take ``n * per_record`` seconds (at
least ``minimum``), and the batch's calls together at most its time budget. Both halves
of a failed part are scored before either is bisected further, so a hung text costs
about twice the limit of its batch before it is isolated (the batch's limit, then half
of it for the half that holds it, and so on down to the one text) while the other
halves are scored at once; and when the budget runs out (every text slow), only the
texts of parts that failed as a whole are left, dead letters of the budget.
``top_k_columns`` turns probabilities into the top label, its score and the top-k list
as JSON. ``warm_input_validation`` does once, in a process that forks workers, what
scikit-learn's first input check in each of them would.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Sequence
from typing import Any

import numpy as np

from models.budget import SPENT, ModelCalls, TimeLimit


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
    model: Any, texts: Any, limit: TimeLimit | ModelCalls | None = None
) -> tuple[np.ndarray, dict[int, str]]:
    """``predict_proba`` on all texts (a list, or the rows of a feature matrix); on
    failure bisect to the failing records. ``limit``: the batch's ``ModelCalls`` (a
    ``TimeLimit``: calls of a batch of these texts under it).

    Returns (probabilities with NaN rows for failures, {row index: error}); the error
    of a text that exceeds its time limit on its own, or that the batch's time budget
    left unscored, starts with ``timeout``.
    """
    errors: dict[int, str] = {}
    n_classes = len(model.classes_)
    n = texts.shape[0] if hasattr(texts, "shape") else len(texts)
    calls = limit if isinstance(limit, ModelCalls) else ModelCalls(limit, n)
    probs = np.full((n, n_classes), np.nan, dtype=np.float64)
    spent = calls.spent_reason() if calls.limit is not None else None

    def score(lo: int, hi: int) -> str | None:
        """Score texts lo..hi-1: None when done (their own errors recorded), else why
        the call failed as a whole."""
        def call() -> Any:
            return model.predict_proba(texts[lo:hi])

        outcome = calls.run(call, hi - lo)
        if outcome.status == "died":  # e.g. a library's lock copied mid-use by the fork
            outcome = calls.run(call, hi - lo)
        if outcome.status == SPENT:
            return outcome.message
        if outcome.status == "timeout":
            return (f"timeout: scoring {hi - lo} record(s) {outcome.message} "
                    f"(limit {calls.limit.per_record * 1000:.6g} ms per record)"
                    if calls.limit else f"timeout: {outcome.message}")
        if outcome.status != "ok":
            return outcome.message
        try:
            out = np.asarray(outcome.value, dtype=np.float64)
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - a value of the model's
            return f"{type(exc).__name__}: {exc}"[:500]
        if out.shape != (hi - lo, n_classes):
            return f"ValueError: predict_proba returned shape {out.shape}"
        bad = ~np.isfinite(out).all(axis=1)
        if bad.any() and hi - lo > 1:
            return "ValueError: non-finite probabilities"
        probs[lo:hi] = out
        for i in np.flatnonzero(bad):
            errors[lo + int(i)] = "model returned non-finite probabilities"
        for i in np.flatnonzero(~bad & ~distributions(out)):
            errors[lo + int(i)] = (f"model returned probabilities that are not a "
                                   f"distribution: {np.round(out[i], 6).tolist()} (each "
                                   "in [0, 1], summing to 1)")
        return None

    def isolate(lo: int, hi: int, reason: str) -> None:
        """Texts lo..hi-1 failed together: each alone gets its own reason."""
        if hi - lo == 1 or reason == spent:
            for i in range(lo, hi):
                errors[i] = reason[:500]
            return
        mid = (lo + hi) // 2
        failed = [(a, b, score(a, b)) for a, b in ((lo, mid), (mid, hi))]
        for a, b, why in failed:
            if why is not None:
                isolate(a, b, why)

    if n:
        reason = score(0, n)
        if reason is not None:
            isolate(0, n, reason)
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
