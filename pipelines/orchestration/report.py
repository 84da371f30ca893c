"""The morning-after report of a run: one static HTML page with embedded PNG charts.

Drawn from the ``monitoring`` rows only (and the retraining requests): a status line
(ok, drift or retraining requested, and why), then each metric of the catalogue
(``tracking.catalogue``) as its chart kind says: slices against the reference (class
shares, the score histogram), a share with its 95% interval over the last
``tracking.report_runs`` runs (accuracy), the drift metrics over those runs with their
thresholds, the slices that moved most (feature importance), records by reason (dead
letters); and a table of every figure of the run. Charts are drawn with matplotlib's
Agg canvas; the page stays well under 2 MB.
"""

from __future__ import annotations

import base64
import html
import io
from collections import defaultdict
from typing import Any

from pipelines.configuration.config import Config
from pipelines.configuration.connection import opened
from store import monitoring, run_records
from store.database import Database
from tracking.catalogue import (
    BY_NAME,
    CHANGES,
    HISTORY,
    INTERVAL,
    PAIR,
    REASONS,
    Metric,
    charted,
)
from tracking.policy import ALERT
from transforms.files import write_atomically


def report_path(output_dir: str, run_id: str) -> str:
    """Where a run's report is written unless told otherwise."""
    return f"{output_dir.rstrip('/')}/_reports/{run_id}.html"


def write_report(cfg: Config, run_id: str, path: str | None = None) -> str:
    """Render ``run_id``'s report to ``path`` (default ``<output_dir>/_reports/``)."""
    path = path or report_path(cfg.output_dir, run_id)
    with opened(cfg) as db:
        page = render(db, run_id, cfg.tracking.report_runs)
    write_atomically(path, page.encode())
    return path


def render(db: Database, run_id: str, history_runs: int) -> str:
    record = run_records.get(db, run_id)
    if record is None:
        raise ValueError(f"no run {run_id}")
    rows = monitoring.rows_of_run(db, run_id)
    name, _, version = record.model.partition(":")
    triggers = [t for t in monitoring.triggers(db, name, version) if run_id in t.run_ids]
    recent = [r.run_id for r in run_records.latest(db, 200)
              if r.model == record.model][:history_runs]
    history = monitoring.history(
        db, name, version, [m.name for m in charted(HISTORY) + charted(INTERVAL)], recent)
    order = {r: i for i, r in enumerate(reversed(recent))}
    parts = [_status(record.status, rows, triggers)]
    parts += [_chart(f"{m.label} against the reference", _pair_png(rows, m))
              for m in charted(PAIR)]
    parts += [_chart(f"{m.label} over the last {len(recent)} runs (95% interval)",
                     _interval_png(history, m, order)) for m in charted(INTERVAL)]
    parts.append(_chart("Drift metrics over the last runs (dashed: threshold)",
                        _drift_png(history, order)))
    parts += [_changes(rows, m) for m in charted(CHANGES)]
    parts += [_reasons(rows, m) for m in charted(REASONS)]
    parts.append(_table(rows))
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>beamscore run "
            f"{html.escape(run_id)}</title><style>{_CSS}</style></head><body>"
            f"<h1>Run {html.escape(run_id)}</h1><p class='sub'>model "
            f"{html.escape(record.model)} &middot; started {html.escape(record.started_at)}"
            f"</p>{''.join(parts)}</body></html>")


_CSS = ("body{font-family:sans-serif;max-width:980px;margin:2em auto;color:#222}"
        ".status{padding:.8em 1em;border-radius:6px;font-size:1.2em}.ok{background:#e3f4e3}"
        ".drift{background:#fff3cd}.retrain{background:#f8d7da}table{border-collapse:"
        "collapse;font-size:.85em}td,th{border-bottom:1px solid #ddd;padding:2px 8px;"
        "text-align:left}.sub{color:#666}img{max-width:100%}td.alert{color:#b00;"
        "font-weight:bold}")


def _status(run_status: str, rows: list[dict[str, Any]], triggers: list[Any]) -> str:
    alerts = [r for r in rows if r["status"] == ALERT]
    if triggers:
        kind, text = "retrain", "retraining requested: " + "; ".join(
            r for t in triggers for r in t.reasons)
    elif alerts:
        kind, text = "drift", "drift: " + ", ".join(
            sorted({f"{r['metric']} on {r['tranche']}" for r in alerts}))
    else:
        kind, text = "ok", "ok: no tracked figure is beyond its threshold"
    return (f"<p class='status {kind}'><b>{html.escape(kind.upper())}</b> &mdash; "
            f"{html.escape(text)} <span class='sub'>(run status {html.escape(run_status)})"
            "</span></p>")


def _figure(width: float = 7.5, height: float = 2.6) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=90)
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    return base64.b64encode(buf.getvalue()).decode()


def _chart(title: str, png: str | None) -> str:
    body = f"<img alt='{html.escape(title)}' src='data:image/png;base64,{png}'>" if png \
        else "<p class='sub'>no data</p>"
    return f"<h2>{html.escape(title)}</h2>{body}"


def _weighted(rows: list[dict[str, Any]], metric: str) -> dict[str, float]:
    """n-weighted mean per slice over the run's tranches."""
    total: dict[str, float] = defaultdict(float)
    weight: dict[str, float] = defaultdict(float)
    for r in rows:
        if r["metric"] == metric and r["value"] is not None:
            total[r["slice"]] += r["value"] * r["n"]
            weight[r["slice"]] += r["n"]
    return {k: total[k] / weight[k] for k in total if weight[k]}


def _pair_png(rows: list[dict[str, Any]], m: Metric) -> str | None:
    mine, ref = _weighted(rows, m.name), _weighted(rows, f"{m.name}_reference")
    if not mine:
        return None
    keys = sorted(mine)
    fig = _figure()
    ax = fig.add_subplot()
    x = range(len(keys))
    ax.bar([i - 0.2 for i in x], [mine[k] for k in keys], 0.4, label="this run")
    if ref:
        ax.bar([i + 0.2 for i in x], [ref.get(k, 0.0) for k in keys], 0.4, label="reference")
    ax.set_xticks(list(x), keys, rotation=45 if len(keys) > 8 else 0, fontsize=7)
    ax.set_xlabel(m.axis)
    ax.set_ylabel("share")
    ax.legend(fontsize=8)
    return _png(fig)


def _series(history: list[dict[str, Any]], m: Metric, order: dict[str, int]
            ) -> list[tuple[int, float, float | None, float | None, float | None]]:
    """One point per run: a share charted with its interval pooled over the run's
    tranches (with its Wilson interval), any other metric its worst tranche (the
    lowest where lower values alert); and the threshold."""
    by_run: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for r in history:
        if r["metric"] == m.name and r["run_id"] in order and r["value"] is not None \
                and r["value"] == r["value"]:
            by_run[order[r["run_id"]]].append(r)
    points = []
    for x, found in sorted(by_run.items()):
        threshold = found[-1]["threshold"]
        if m.chart == INTERVAL:
            from tracking.statistics import wilson  # scipy: only for a report with accuracy

            n = sum(r["n"] for r in found)
            correct = round(sum(r["value"] * r["n"] for r in found))
            low, high = wilson(correct, n)
            points.append((x, correct / n, low, high, threshold))
        else:
            worst = min if m.breach == "<" else max
            points.append((x, worst(r["value"] for r in found), None, None, threshold))
    return points


def _run_labels(history: list[dict[str, Any]], order: dict[str, int]) -> dict[int, str]:
    """A run's label on the history charts: the tranche it scored (MM-DD; "+n" when it
    scored more), else its start time from the run id."""
    tranches: dict[str, set[str]] = defaultdict(set)
    for r in history:
        tranches[r["run_id"]].add(r["tranche"])
    labels = {}
    for run_id, i in order.items():
        days = sorted(tranches.get(run_id, ()))
        labels[i] = (days[0][5:] + (f" +{len(days) - 1}" if len(days) > 1 else "")) if days \
            else run_id[4:8] + " " + run_id[9:13]
    return labels


def _runs_axis(ax: Any, labels: dict[int, str]) -> None:
    ticks = sorted(labels)
    ax.set_xticks(ticks, [labels[t] for t in ticks], fontsize=6, rotation=45)


def _interval_png(history: list[dict[str, Any]], m: Metric, order: dict[str, int]
                  ) -> str | None:
    points = _series(history, m, order)
    if not points:
        return None
    fig = _figure()
    ax = fig.add_subplot()
    xs = [p[0] for p in points]
    ax.plot(xs, [p[1] for p in points], "o-", label=m.name)
    ax.fill_between(xs, [p[2] or p[1] for p in points], [p[3] or p[1] for p in points],
                    alpha=0.25, label="95% interval")
    if points[-1][4] is not None:
        ax.axhline(points[-1][4], ls="--", color="#b00",
                   label="alert below" if m.breach == "<" else "alert above")
    _runs_axis(ax, _run_labels(history, order))
    ax.set_xlim(-0.5, max(order.values()) + 0.5)
    ax.legend(fontsize=8)
    return _png(fig)


def _drift_png(history: list[dict[str, Any]], order: dict[str, int]) -> str | None:
    metrics = [m for m in charted(HISTORY) if _series(history, m, order)]
    if not metrics:
        return None
    fig = _figure(7.5, 1.7 * ((len(metrics) + 1) // 2) + 0.4)
    for k, metric in enumerate(metrics):
        ax = fig.add_subplot((len(metrics) + 1) // 2, 2, k + 1)
        points = _series(history, metric, order)
        ax.plot([p[0] for p in points], [p[1] for p in points], "o-", ms=3)
        thresholds = [p[4] for p in points if p[4] is not None]
        if thresholds:
            ax.axhline(thresholds[-1], ls="--", color="#b00")
        ax.set_title(f"{metric.label} (worst tranche"
                     f"{', alert below' if metric.breach == '<' else ''})", fontsize=8)
        ax.set_xlim(-0.5, max(order.values()) + 0.5)
        _runs_axis(ax, _run_labels(history, order))
        ax.tick_params(labelsize=7)
    return _png(fig)


def _changes(rows: list[dict[str, Any]], m: Metric) -> str:
    """The 10 slices of ``m`` that moved most: each row's change and its reference (the
    row's threshold)."""
    moved = sorted((r for r in rows if r["metric"] == m.name),
                   key=lambda r: -abs(r["value"]))[:10]
    if not moved:
        return f"<h2>{html.escape(m.label)}</h2><p class='sub'>none measured</p>"
    body = "".join(f"<tr><td>{html.escape(r['tranche'])}</td><td>{html.escape(r['slice'])}"
                   f"</td><td>{r['threshold']:.4g}</td><td>{r['value']:+.4g}</td></tr>"
                   for r in moved)
    return (f"<h2>{html.escape(m.label)}</h2><table><tr><th>tranche</th>"
            f"<th>{html.escape(m.axis)}</th><th>reference</th><th>change</th></tr>"
            + body + "</table>")


def _reasons(rows: list[dict[str, Any]], m: Metric) -> str:
    found = [r for r in rows if r["metric"] == m.name]
    if not found:
        return f"<h2>{html.escape(m.label)}</h2><p class='sub'>none</p>"
    body = "".join(f"<tr><td>{html.escape(r['tranche'])}</td><td>{html.escape(r['slice'])}"
                   f"</td><td>{r['n']}</td></tr>" for r in sorted(found, key=lambda r: -r["n"]))
    return (f"<h2>{html.escape(m.label)}</h2><table><tr><th>tranche</th>"
            f"<th>{html.escape(m.axis)}</th><th>records</th></tr>" + body + "</table>")


def _number(value: float) -> str:
    """A figure as the report shows it: four significant digits."""
    return f"{value:.4g}"


def _table(rows: list[dict[str, Any]]) -> str:
    def cell(v: Any) -> str:
        return "" if v is None else html.escape(_number(v) if isinstance(v, float) else str(v))

    body = "".join(
        f"<tr data-tranche='{html.escape(r['tranche'])}' data-metric='{html.escape(r['metric'])}'"
        f" data-slice='{html.escape(r['slice'])}'><td>{html.escape(r['tranche'])}</td>"
        f"<td>{html.escape(r['metric'])}</td><td>{html.escape(r['slice'])}</td>"
        f"<td class='value'>{cell(r['value'])}</td><td>{r['n']}</td><td>{cell(r['ci_low'])}"
        f"</td><td>{cell(r['ci_high'])}</td><td>{cell(r['threshold'])}</td>"
        f"<td class='{r['status']}'>{r['status']}</td></tr>"
        for r in rows if r["metric"] not in BY_NAME or BY_NAME[r["metric"]].in_table)
    return ("<h2>Every figure of the run</h2><table id='metrics'><tr><th>tranche</th>"
            "<th>metric</th><th>slice</th><th>value</th><th>n</th><th>95% low</th>"
            "<th>95% high</th><th>threshold</th><th>status</th></tr>" + body + "</table>")
