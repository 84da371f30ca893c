"""The report's charts: PNGs (base64) drawn with matplotlib's Agg canvas from
``monitoring`` rows, sized for a 960-pixel page with 10-point text and labelled axes.

``classes_png``: the classes whose share moved most (and "other") against the
reference, horizontal bars so long names stay readable (every label from the data drawn
literally and at most ``MAX_LABEL`` characters long: ``label``); ``pair_png``: a histogram
(scores) against the reference; ``history_png``: one figure per run over the last runs,
dated, the threshold dashed, the report's own run marked, with a 95% interval where the
metric has one.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

_DPI, _WIDTH, _FONT = 100, 9.4, 10
_THIS, _REF, _ALERT = "#1f5fa8", "#9a9a9a", "#b00020"


@dataclass(frozen=True)
class Point:
    """A run's value on a history chart (``low``/``high``: its interval, if any)."""

    label: str  # the run's date
    value: float
    low: float | None = None
    high: float | None = None
    threshold: float | None = None
    current: bool = False  # the report's own run


def _figure(height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(_WIDTH, height), dpi=_DPI)
    FigureCanvasAgg(fig)
    return fig


_CHAR = 0.085  # inches a character of the tick labels takes, at most (font _FONT)
MAX_LABEL = 40  # characters of a data label (a class, a slice) drawn on a chart


def label(text: str) -> str:
    """A label from the data as a chart draws it: at most ``MAX_LABEL`` characters (the
    report's table has it whole) and literal, ``$`` escaped so that matplotlib does
    not read the text between two as mathematics (which can fail to parse, and would
    stop the chart)."""
    text = text if len(text) <= MAX_LABEL else text[:MAX_LABEL - 1] + "…"
    return text.replace("$", r"\$")


def _margins(fig: Any, left: float, bottom: float, top: float = 0.2, right: float = 0.25,
             rows: int = 1, columns: int = 1, row_gap: float = 0.0,
             column_gap: float = 0.0) -> None:
    """Fixed margins and gaps in inches, computed from the labels each chart draws (a
    fitted layout costs a whole extra drawing of the figure)."""
    width, height = fig.get_size_inches()
    cell_w = (width - left - right - column_gap * (columns - 1)) / columns
    cell_h = (height - top - bottom - row_gap * (rows - 1)) / rows
    fig.subplots_adjust(left=left / width, right=1 - right / width,
                        bottom=bottom / height, top=1 - top / height,
                        wspace=column_gap / cell_w, hspace=row_gap / cell_h)


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return base64.b64encode(buf.getvalue()).decode()


def classes_png(moved: Sequence[tuple[str, float, float]]) -> str | None:
    """Horizontal bars of (class, this run's share, the reference's), top first."""
    if not moved:
        return None
    fig = _figure(0.42 * len(moved) + 1.2)
    ax = fig.add_subplot()
    y = list(range(len(moved)))[::-1]
    ax.barh([i + 0.2 for i in y], [m[1] for m in moved], 0.4, color=_THIS, label="this run")
    ax.barh([i - 0.2 for i in y], [m[2] for m in moved], 0.4, color=_REF, label="reference")
    names = [label(m[0]) for m in moved]
    ax.set_yticks(y, names, fontsize=_FONT)
    ax.set_xlabel("share of predictions", fontsize=_FONT)
    ax.tick_params(axis="x", labelsize=_FONT)
    ax.legend(fontsize=_FONT, loc="lower right")
    _margins(fig, left=0.3 + _CHAR * max(len(n) for n in names), bottom=0.65)
    return _png(fig)


def pair_png(keys: Sequence[str], mine: Sequence[float], ref: Sequence[float] | None,
             axis: str) -> str | None:
    """Bars of ``mine`` (and the reference's) per slice, e.g. score bins."""
    if not keys:
        return None
    fig = _figure(3.2)
    ax = fig.add_subplot()
    x = range(len(keys))
    ax.bar([i - 0.2 for i in x], mine, 0.4, color=_THIS, label="this run")
    if ref is not None:
        ax.bar([i + 0.2 for i in x], ref, 0.4, color=_REF, label="reference")
    step = max(1, len(keys) // 10)
    ax.set_xticks(list(x)[::step], [label(k) for k in keys][::step], fontsize=_FONT - 1)
    ax.set_xlabel(axis, fontsize=_FONT)
    ax.set_ylabel("share of records", fontsize=_FONT)
    ax.tick_params(axis="y", labelsize=_FONT)
    ax.legend(fontsize=_FONT)
    _margins(fig, left=0.85, bottom=0.7)
    return _png(fig)


def _history_axes(ax: Any, title: str, points: Sequence[Point], ylabel: str) -> None:
    xs = list(range(len(points)))
    ax.plot(xs, [p.value for p in points], "o-", color=_THIS, ms=4)
    if any(p.low is not None for p in points):
        ax.fill_between(xs, [p.value if p.low is None else p.low for p in points],
                        [p.value if p.high is None else p.high for p in points],
                        color=_THIS, alpha=0.2, label="95% interval")
    thresholds = [p.threshold for p in points if p.threshold is not None]
    if thresholds:
        ax.axhline(thresholds[-1], ls="--", color=_ALERT, lw=1, label="alert threshold")
    for i, p in enumerate(points):
        if p.current:
            ax.axvline(i, color="#444", lw=0.8, ls=":")
            ax.plot([i], [p.value], "o", ms=9, mfc="none", mec="#111", label="this run")
    ax.set_title(title, fontsize=_FONT + 1)
    ax.set_ylabel(ylabel, fontsize=_FONT)
    step = max(1, len(points) // 8)
    ax.set_xticks(xs[::step], [label(p.label) for p in points][::step], fontsize=_FONT - 1,
                  rotation=30, ha="right")
    ax.tick_params(axis="y", labelsize=_FONT - 1)
    ax.set_xlim(-0.5, len(points) - 0.5)


def history_png(series: Sequence[tuple[str, str, Sequence[Point]]]) -> str | None:
    """One panel per (title, y label, points), two panels a row."""
    series = [s for s in series if s[2]]
    if not series:
        return None
    rows, columns = (len(series) + 1) // 2, 2 if len(series) > 1 else 1
    fig = _figure(2.9 * rows + 0.3)
    for k, (title, ylabel, points) in enumerate(series):
        ax = fig.add_subplot(rows, columns, k + 1)
        _history_axes(ax, title, points, ylabel)
        if k == 0 and ax.get_legend_handles_labels()[0]:  # a legend only of something
            ax.legend(fontsize=_FONT - 2, loc="best")
    # x labels are run dates turned 30 degrees, hanging down and to the left of their tick
    longest = _CHAR * max(len(label(p.label)) for _, _, points in series for p in points)
    _margins(fig, left=max(0.85, 0.87 * longest + 0.1), bottom=0.5 * longest + 0.35,
             top=0.35, rows=rows, columns=columns, row_gap=0.5 * longest + 0.7,
             column_gap=max(0.85, 0.87 * longest + 0.1))
    return _png(fig)


def warm_up() -> None:
    """Draw one histogram and one history chart of made-up values and drop them:
    matplotlib's first drawing in a process (fonts, tick and text layout, the PNG
    encoder) is the slowest, and is done here while a run's pipeline is still going."""
    pair_png(["a", "b"], [0.5, 0.5], [0.4, 0.6], "score")
    history_png([("title", "value", [Point("run", 0.5, 0.4, 0.6, 0.7, current=True)])])
