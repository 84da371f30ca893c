"""Models with known misbehaviour, wrapping a fitted scikit-learn pipeline.

They live in an importable module (not a test module) so that worker processes can
unpickle them; being user classes, they load only when trusted by name
(``TRUSTED``, i.e. ``inference.trusted_types``).
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin


class PoisonedPipeline:
    """Raises on any batch containing POISON."""

    def __init__(self, inner: Any):
        self.inner = inner
        self.classes_ = inner.classes_

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        texts = list(texts)
        if any("POISON" in t for t in texts):
            raise RuntimeError("model crashed on poisoned text")
        return self.inner.predict_proba(texts)


class HangingPipeline(PoisonedPipeline):
    """Never returns on a batch containing HANG; takes SLOW_SECONDS on one containing
    SLOW (under a limit of 0.5 s per record alone)."""

    SLOW_SECONDS = 0.3

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        texts = list(texts)
        if any("HANG" in t for t in texts):
            while True:
                time.sleep(3600)
        if any("SLOW" in t for t in texts):
            time.sleep(self.SLOW_SECONDS)
        return self.inner.predict_proba(texts)


class CountingPipeline(PoisonedPipeline):
    """Counts how many times it is unpickled, i.e. loaded from the registry."""

    loads = 0

    def __setstate__(self, state: dict[str, Any]) -> None:
        type(self).loads += 1
        self.__dict__.update(state)


class HangingTokenizer:
    """A vectoriser's tokenizer that never returns on a text holding the word
    "hangnow": third-party code in featurisation, before any ``predict_proba``."""

    def __call__(self, text: str) -> list[str]:
        words = text.split()
        if "hangnow" in words:
            while True:
                time.sleep(3600)
        return words


class CrashesInWorker(PoisonedPipeline):
    """Ends its process with the signal named in ``CRASH_ENV`` (``SIGSEGV``, ``SIGKILL``)
    when its classes are read while that variable is set (in a run's worker): a process
    lost outside any call kept apart."""

    CRASH_ENV = "BEAMSCORE_TEST_CRASH_SIGNAL"

    def __init__(self, inner: Any):
        self.inner = inner

    @property
    def classes_(self) -> Any:
        name = os.environ.get(self.CRASH_ENV)
        if name:
            os.kill(os.getpid(), getattr(signal, name))
        return self.inner.classes_


class SlowClassifier(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """A classifier of a vectoriser's features (the last step of a scikit-learn Pipeline)
    that takes ``seconds_per_row`` per row, as a model calling a slow library would; no
    coefficients, so tracking measures its importance by permutation."""

    def __init__(self, inner: Any, seconds_per_row: float):
        self.inner = inner
        self.classes_ = inner.classes_
        self.seconds_per_row = seconds_per_row

    def fit(self, x: Any, y: Any) -> SlowClassifier:
        return self

    def predict_proba(self, x: Any) -> np.ndarray:
        time.sleep(self.seconds_per_row * x.shape[0])
        return np.asarray(self.inner.predict_proba(x))


def slow_pipeline(fitted: Any, seconds_per_row: float) -> Any:
    """``fitted`` (vectoriser + classifier) with its classifier made slow."""
    from sklearn.pipeline import Pipeline

    return Pipeline([fitted.steps[0], ("slow", SlowClassifier(fitted.steps[-1][1],
                                                              seconds_per_row))])


TRUSTED = [f"{__name__}.{c.__name__}"
           for c in (PoisonedPipeline, HangingPipeline, CountingPipeline, HangingTokenizer,
                     SlowClassifier, CrashesInWorker)]
