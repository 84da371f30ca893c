"""Input of the sink benchmark (``sink_bench``): scored DocBatches of prediction rows.

``make_batch(i, size)`` builds batch ``i`` with distinct ids; ``prebuild`` and ``batch``
cache them for a pipeline run in the launching process (looked up, not shipped), while
worker subprocesses build their own.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from transforms.records import (
    DOC_ID,
    LABEL,
    METADATA,
    POSITION,
    PRED_LABEL,
    PRED_SCORE,
    PRED_TOP_K,
    RAW,
    SOURCE,
    DocBatch,
)

TOP_K = json.dumps([["billing", 0.91], ["shipping", 0.05], ["returns", 0.02]])
_CACHE: dict[tuple[int, int], DocBatch] = {}


def make_batch(i: int, size: int) -> DocBatch:
    """Batch ``i``: ``size`` rows with distinct ids (about 0.6 s per 500,000 rows here)."""
    ids = [f"doc-{i:05d}-{j:06d}" for j in range(size)]
    frame = pd.DataFrame({
        DOC_ID: ids, SOURCE: [f"gs://bench/file-{i % 8}.jsonl"] * size,
        POSITION: np.arange(1, size + 1), METADATA: [None] * size,
        RAW: [None] * size, LABEL: [None] * size, PRED_LABEL: ["billing"] * size,
        PRED_SCORE: np.full(size, 0.91), PRED_TOP_K: [TOP_K] * size,
    })
    return DocBatch("2026-01-01", f"b{i:05d}", frame)


def prebuild(n_batches: int, size: int) -> None:
    for i in range(n_batches):
        _CACHE[(i, size)] = make_batch(i, size)


def batch(i: int, size: int) -> DocBatch:
    """The prebuilt batch when this process made it, else a new one."""
    found = _CACHE.get((i, size))
    return found if found is not None else make_batch(i, size)
