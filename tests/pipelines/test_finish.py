"""What follows a run's pipeline: the warm-up that draws the report's first charts
while the pipeline runs, and ``finish``, which draws only once that is done."""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from pipelines.configuration.config import TrackingConfig
from pipelines.orchestration import finish as finishing
from store.session import DatabaseSettings


def test_the_warm_up_imports_matplotlib_and_draws_in_the_background() -> None:
    thread = finishing.warm_up()
    thread.join(timeout=120)
    assert not thread.is_alive() and thread.daemon
    assert "matplotlib.backends.backend_agg" in sys.modules and "scipy.stats" in sys.modules


def test_finish_draws_the_report_only_after_the_warm_up_has_drawn(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """matplotlib is not drawn from two threads at once: a warm-up still drawing when the
    pipeline ends (a very short run) holds the report back until it is done."""
    order: list[str] = []
    go = threading.Event()

    def slow_warm_up() -> None:
        go.wait(timeout=120)
        order.append("warm-up drawn")

    def write_report(*_: Any, **__: Any) -> str:
        order.append("report drawn")
        return str(tmp_path / "report.html")

    monkeypatch.setattr("pipelines.orchestration.report_charts.warm_up", slow_warm_up)
    monkeypatch.setattr("pipelines.orchestration.report.write_report", write_report)
    monkeypatch.setattr(finishing, "_warming", None)
    assert finishing.warm_up() is finishing.warm_up()  # a second call while one warms up
    settings = finishing.FinishSettings(DatabaseSettings(f"sqlite:///{tmp_path}/db"),
                                        TrackingConfig(enabled=False), str(tmp_path))
    result: list[Any] = []
    run = threading.Thread(target=lambda: result.append(
        finishing.finish(settings, None, "run-1", None, None)))  # type: ignore[arg-type]
    run.start()
    run.join(timeout=0.3)
    assert run.is_alive() and order == []  # waiting for the warm-up
    go.set()
    run.join(timeout=120)
    assert order == ["warm-up drawn", "report drawn"]
    assert result == [(None, str(tmp_path / "report.html"))]
