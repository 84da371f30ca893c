"""Fixtures of the transform tests: DocBatches as the reader would emit them."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import pandas as pd
import pytest

from transforms.records import DOC_ID, LABEL, METADATA, POSITION, RAW, SOURCE, TEXT, DocBatch


def build_batch(rows: Iterable[dict[str, Any]], *, tranche: str = "2026-01-01",
                source_file: str = "/in/dt=2026-01-01/part-0.jsonl",
                batch_key: str = "k-0000-00000", start: int = 1,
                sources: list[tuple[str, int]] | None = None) -> DocBatch:
    """A DocBatch as the reader would emit it: of one file, positions start..start+n-1,
    or with ``sources``, row i at position ``sources[i][1]`` of file ``sources[i][0]``."""
    rows = list(rows)
    n = len(rows)
    if sources is None:
        sources = [(source_file, p) for p in range(start, start + n)]
    frame = pd.DataFrame({
        DOC_ID: pd.Series([r.get("id") for r in rows], dtype=object),
        TEXT: pd.Series([r.get("text") for r in rows], dtype=object),
        LABEL: pd.Series([r.get("label") for r in rows], dtype=object),
        SOURCE: pd.Series([f for f, _ in sources], dtype=object),
        POSITION: [p for _, p in sources],
        METADATA: pd.Series([None] * n, dtype=object),
        RAW: pd.Series(rows, dtype=object),
    })
    return DocBatch(tranche=tranche, batch_key=batch_key, frame=frame)


@pytest.fixture
def make_batch() -> Callable[..., DocBatch]:
    return build_batch
