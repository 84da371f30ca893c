"""The report's charts: PNGs that matplotlib draws without complaint, whatever the points."""

from __future__ import annotations

import base64
import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.orchestration.report_charts import (
    MAX_LABEL,
    Point,
    classes_png,
    history_png,
    label,
    pair_png,
)


@pytest.mark.parametrize("points", [
    [Point("2026-01-01", 0.5), Point("2026-01-02", 0.6)],  # nothing to put in a legend
    [Point("2026-01-01", 0.5, 0.4, 0.6, 0.7), Point("2026-01-02", 0.6, current=True)],
])
def test_history_charts_draw_without_warnings(points: list[Point]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        png = history_png([("accuracy", "share", points), ("drift", "PSI", points)])
    assert png is not None and base64.b64decode(png).startswith(b"\x89PNG")
    assert history_png([("empty", "share", [])]) is None


def test_pair_chart_draws_with_and_without_a_reference() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for ref in (None, [0.3, 0.7]):
            png = pair_png(["0.0-0.5", "0.5-1.0"], [0.4, 0.6], ref, "score")
            assert png is not None and base64.b64decode(png).startswith(b"\x89PNG")
    assert pair_png([], [], None, "score") is None


@given(st.lists(st.text(st.characters(min_codepoint=32, max_codepoint=126), min_size=1,
                        max_size=300), min_size=1, max_size=6, unique=True))
@settings(max_examples=40, deadline=None)
def test_any_labels_are_drawn_literally_within_the_figure(names: list[str]) -> None:
    """Class names and slices come from the data: a ``$`` (matplotlib's mathematics) or
    a 300-character label must not stop a chart, and so not the report."""
    moved = [(n, 0.1 * (i + 1), 0.1) for i, n in enumerate(names)]
    for png in (classes_png(moved), pair_png(names, [0.5] * len(names), None, "stage")):
        assert png is not None and base64.b64decode(png).startswith(b"\x89PNG")
    assert label("billing_$USD_$EUR") == r"billing_\$USD_\$EUR"
    assert len(label("x" * 300)) == MAX_LABEL
