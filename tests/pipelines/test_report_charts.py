"""The report's charts: PNGs that matplotlib draws without complaint, whatever the points."""

from __future__ import annotations

import base64
import warnings

import pytest

from pipelines.orchestration.report_charts import Point, history_png, pair_png


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
