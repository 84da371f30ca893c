"""A mergeable quantile sketch (Apache DataSketches KLL) that Beam can pickle.

KLL with k = 200 answers rank and quantile queries within a normalised rank error of
about 1.65% (``rank_error``), whatever the number of values, in a few kilobytes; two
sketches merge into one of the union. ``Sketch`` wraps ``kll_floats_sketch`` with
pickling (its own serialisation), vectorised updates and the grid queries the metrics
use.
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
from datasketches import kll_floats_sketch

K = 200


class Sketch:
    def __init__(self, k: int = K):
        self._k = k
        self._s = kll_floats_sketch(k)

    def update(self, values: Any) -> None:
        values = np.asarray(values, dtype=np.float32).ravel()
        if values.size:
            self._s.update(values)

    def merge(self, other: Sketch) -> None:
        if other.n:
            self._s.merge(other._s)

    @property
    def n(self) -> int:
        return int(self._s.n)

    @property
    def exact(self) -> bool:
        """Whether the sketch still holds every value (its ranks are exact)."""
        return not self._s.is_estimation_mode()

    @property
    def rank_error(self) -> float:
        """The normalised rank error of a single-sided query (e.g. a CDF value)."""
        return float(self._s.normalized_rank_error(False))

    def quantiles(self, ranks: Any) -> np.ndarray:
        return np.asarray([self._s.get_quantile(float(r)) for r in ranks], dtype=np.float64)

    def cdf(self, points: Any) -> np.ndarray:
        """P(value <= x) at increasing ``points``."""
        if not self.n:
            return np.zeros(len(points))
        return np.asarray([self._s.get_rank(float(x), True) for x in points])

    def min_max(self) -> tuple[float, float]:
        return float(self._s.get_min_value()), float(self._s.get_max_value())

    def to_text(self) -> str:
        return base64.b64encode(self._s.serialize()).decode()

    @classmethod
    def from_text(cls, text: str, k: int = K) -> Sketch:
        out = cls(k)
        out._s = kll_floats_sketch.deserialize(base64.b64decode(text))
        return out

    def __getstate__(self) -> dict[str, Any]:
        return {"k": self._k, "bytes": self._s.serialize()}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._k = state["k"]
        self._s = kll_floats_sketch.deserialize(state["bytes"])
