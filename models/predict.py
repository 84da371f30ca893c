"""Calling a model on a batch of texts: failure isolation and top-k columns.

``predict_with_isolation`` runs one ``predict_proba`` per batch and, when the call
raises or returns non-finite rows, bisects the batch so that only the texts that fail
on their own are reported. ``top_k_columns`` turns probabilities into the top label,
its score and the top-k list as JSON.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np


def predict_with_isolation(
    model: Any, texts: list[str]
) -> tuple[np.ndarray, dict[int, str]]:
    """``predict_proba`` on all texts; on failure bisect to the failing records.

    Returns (probabilities with NaN rows for failures, {row index: error}).
    """
    errors: dict[int, str] = {}
    n_classes = len(model.classes_)
    probs = np.full((len(texts), n_classes), np.nan, dtype=np.float64)

    def attempt(lo: int, hi: int) -> None:
        try:
            out = np.asarray(model.predict_proba(texts[lo:hi]), dtype=np.float64)
            if out.shape != (hi - lo, n_classes):
                raise ValueError(f"predict_proba returned shape {out.shape}")
            bad = ~np.isfinite(out).all(axis=1)
            if bad.any() and hi - lo > 1:
                raise ValueError("non-finite probabilities")
            probs[lo:hi] = out
            for i in np.flatnonzero(bad):
                errors[lo + int(i)] = "model returned non-finite probabilities"
        except Exception as exc:  # noqa: BLE001 - any model error is isolated, not fatal
            if hi - lo == 1:
                errors[lo] = f"{type(exc).__name__}: {exc}"[:500]
                return
            mid = (lo + hi) // 2
            attempt(lo, mid)
            attempt(mid, hi)

    if texts:
        attempt(0, len(texts))
    return probs, errors


def top_k_columns(
    probs: np.ndarray, classes: Sequence[Any], k: int
) -> tuple[list[str], np.ndarray, list[str]]:
    """Top label, its score, and top-k as a JSON list of [label, score] per row.

    The JSON is assembled from pre-encoded labels and ``repr`` of the rounded floats
    (what ``json.dumps`` writes for a float) rather than ``json.dumps`` per row.
    """
    k = min(k, probs.shape[1])
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    top_scores = np.take_along_axis(probs, order, axis=1)
    names = [str(c) for c in classes]
    encoded = [json.dumps(n, ensure_ascii=False) for n in names]
    labels = [names[i] for i in order[:, 0].tolist()]
    scores = top_scores[:, 0]
    top_k = [
        "[" + ", ".join(f"[{encoded[j]}, {v!r}]" for j, v in zip(js, vs)) + "]"
        for js, vs in zip(order.tolist(), np.round(top_scores, 6).tolist())
    ]
    return labels, scores, top_k
