"""The KLL sketch wrapper: within its rank error of the exact CDF, mergeable into the
sketch of the union, and unchanged through pickling (Beam) and text (the registry)."""

from __future__ import annotations

import pickle

import numpy as np

from tracking.sketch import Sketch


def _exact_cdf(values: np.ndarray, points: np.ndarray) -> np.ndarray:
    ordered = np.sort(values.astype(np.float32))
    return np.searchsorted(ordered, points.astype(np.float32), side="right") / len(values)


def test_cdf_and_quantiles_are_within_the_rank_error() -> None:
    values = np.random.default_rng(3).lognormal(5, 1, 100_000)
    s = Sketch()
    s.update(values)
    points = np.quantile(values, np.linspace(0.01, 0.99, 50))
    assert s.n == 100_000 and 0 < s.rank_error < 0.02
    assert np.max(np.abs(s.cdf(points) - _exact_cdf(values, points))) <= s.rank_error
    ranks = np.linspace(0.05, 0.95, 19)
    true_ranks = _exact_cdf(values, s.quantiles(ranks))
    assert np.max(np.abs(true_ranks - ranks)) <= s.rank_error
    assert s.min_max() == (float(np.float32(values.min())), float(np.float32(values.max())))


def test_merged_sketches_answer_for_the_union() -> None:
    rng = np.random.default_rng(4)
    parts = [rng.normal(i, 1, 30_000) for i in range(4)]
    merged = Sketch()
    for part in parts:
        s = Sketch()
        s.update(part)
        merged.merge(s)
    merged.merge(Sketch())  # an empty worker's accumulator changes nothing
    union = np.concatenate(parts)
    points = np.linspace(-2, 5, 30)
    assert merged.n == len(union)
    assert np.max(np.abs(merged.cdf(points) - _exact_cdf(union, points))) <= merged.rank_error


def test_a_sketch_survives_pickling_and_text() -> None:
    s = Sketch()
    s.update(np.arange(10_000, dtype=np.float64) / 10_000)
    points = np.linspace(0, 1, 11)
    for copy in (pickle.loads(pickle.dumps(s)), Sketch.from_text(s.to_text())):
        assert copy.n == s.n
        assert np.array_equal(copy.cdf(points), s.cdf(points))
    empty = Sketch()
    assert empty.n == 0 and np.array_equal(empty.cdf([0.5]), [0.0])
    empty.update([])
    assert empty.n == 0
