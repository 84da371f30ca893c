"""Models with known misbehaviour, wrapping a fitted scikit-learn pipeline.

They live in an importable module (not a test module) so that worker processes can
unpickle them; being user classes, they load only when trusted by name
(``TRUSTED``, i.e. ``inference.trusted_types``).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np


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


TRUSTED = [f"{__name__}.{c.__name__}"
           for c in (PoisonedPipeline, HangingPipeline, CountingPipeline, HangingTokenizer)]
