"""Fixtures of the transform tests: DocBatches as the reader would emit them."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import pandas as pd
import pytest

from transforms.records import DOC_ID, LABEL, METADATA, POSITION, RAW, TEXT, DocBatch


def build_batch(rows: Iterable[dict[str, Any]], *, tranche: str = "2026-01-01",
                source_file: str = "/in/dt=2026-01-01/part-0.jsonl",
                batch_key: str = "k-0000-00000", start: int = 1) -> DocBatch:
    """A DocBatch as the reader would emit it; positions start..start+n-1."""
    rows = list(rows)
    n = len(rows)
    frame = pd.DataFrame({
        DOC_ID: pd.Series([r.get("id") for r in rows], dtype=object),
        TEXT: pd.Series([r.get("text") for r in rows], dtype=object),
        LABEL: pd.Series([r.get("label") for r in rows], dtype=object),
        POSITION: list(range(start, start + n)),
        METADATA: pd.Series([None] * n, dtype=object),
        RAW: pd.Series(rows, dtype=object),
    })
    return DocBatch(tranche=tranche, source_file=source_file, batch_key=batch_key, frame=frame)


@pytest.fixture
def make_batch() -> Callable[..., DocBatch]:
    return build_batch
