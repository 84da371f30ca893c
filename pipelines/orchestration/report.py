"""The morning-after report of a run: one static HTML page with embedded PNG charts.

Drawn from the ``monitoring`` rows and the retraining requests only, as of its run (a
report regenerated later shows the runs up to its run, and only the request its run
made). It opens with a banner (OK, DRIFT, RETRAIN or INSUFFICIENT), a plain-language
summary of what changed (the classes whose share moved most, the score shift, the
inputs, accuracy) and what to do for each kind of alert (``pipelines.orchestration.
report_text``); then the charts (``report_charts``): the classes that moved most and
"other" against the reference, the score histogram against the reference, accuracy with
its 95% interval and every drift metric over the last ``tracking.report_runs`` runs
(dated, thresholds dashed, this run circled); the features whose importance moved most,
dead letters by reason, and a table of every figure of the run. The page is a few
hundred KB for a few tranches; the table adds about 10 KB a tranche.
"""

from __future__ import annotations

import html
import os
from collections import defaultdict
from typing import Any

from pipelines.configuration.connection import open_existing
from pipelines.orchestration import report_charts as charts
from pipelines.orchestration.report_text import (
    actions,
    banner,
    class_moves,
    summary,
    weighted,
    worst_row,
)
from store import monitoring, run_records
from store.database import Database, redact
from store.session import DatabaseSettings
from tracking.catalogue import BY_NAME, CHANGES, HISTORY, INTERVAL, PAIR, REASONS, Metric, charted
from transforms.files import write_atomically


def report_path(output_dir: str, run_id: str) -> str:
    """Where a run's report is written unless told otherwise."""
    return f"{output_dir.rstrip('/')}/_reports/{run_id}.html"


def write_report(database: DatabaseSettings, output_dir: str, history_runs: int, run_id: str,
                 path: str | None = None) -> str:
    """Render ``run_id``'s report, with the last ``history_runs`` runs up to it, to
    ``path`` (default ``<output_dir>/_reports/``; a folder that exists, or a path ending
    in "/": ``RUN_ID.html`` in it)."""
    if path and (path.endswith("/") or os.path.isdir(path)):
        path = f"{path.rstrip('/')}/{run_id}.html"
    path = path or report_path(output_dir, run_id)
    db = open_existing(database, table="runs")  # a report creates no database
    if db is None:
        raise ValueError(f"no run {run_id}: no runs recorded in {redact(database.url)}")
    try:
        page = render(db, run_id, history_runs)
    finally:
        db.close()
    write_atomically(path, page.encode())
    return path


def render(db: Database, run_id: str, history_runs: int) -> str:
    record = run_records.get(db, run_id)
    if record is None:
        raise ValueError(f"no run {run_id}")
    rows = monitoring.rows_of_run(db, run_id)
    name, _, version = record.model.partition(":")
    reasons = list(dict.fromkeys(  # the request this run made, each reason once
        reason for t in monitoring.triggers(db, name, version) if t.run_ids[:1] == [run_id]
        for reason in t.reasons))
    runs = _runs_up_to(db, record, history_runs)
    history = monitoring.history(
        db, name, version, [m.name for m in charted(HISTORY) + charted(INTERVAL)],
        [r.run_id for r in runs])
    labels = _run_labels(runs, history)
    parts = [banner(record.status, rows, reasons), summary(rows), actions(rows, reasons)]
    parts.append(_chart("Class shares against the reference (the classes that moved most)",
                        charts.classes_png(class_moves(rows))))
    parts += [_chart(f"{m.label} against the reference", _pair_png(rows, m))
              for m in charted(PAIR) if m.name != "class_share"]
    parts += [_chart(f"{m.label} over the last {len(runs)} runs (95% interval)",
                     charts.history_png([(m.label, "share", _series(history, m, labels,
                                                                     run_id))]))
              for m in charted(INTERVAL)]
    parts.append(_chart("Drift metrics over the last runs (worst tranche of each run; "
                        "dashed: alert threshold; circled: this run)",
                        charts.history_png([(_title(m), "value",
                                             _series(history, m, labels, run_id))
                                            for m in charted(HISTORY)])))
    parts += [_changes(rows, m) for m in charted(CHANGES)]
    parts += [_reasons(rows, m) for m in charted(REASONS)]
    parts.append(_table(rows))
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>beamscore run "
            f"{html.escape(run_id)}</title><style>{_CSS}</style></head><body>"
            f"<h1>Run {html.escape(run_id)}</h1><p class='sub'>model "
            f"{html.escape(record.model)} &middot; started {html.escape(record.started_at)}"
            f"</p>{''.join(parts)}</body></html>")


_CSS = ("body{font-family:system-ui,sans-serif;max-width:960px;margin:2em auto;color:#222;"
        "line-height:1.45}.status{padding:.8em 1em;border-radius:6px;font-size:1.15em}"
        ".ok{background:#e3f4e3}.drift{background:#fff3cd}.retrain{background:#f8d7da}"
        ".insufficient{background:#e8e8ee}table{border-collapse:collapse;font-size:.85em}"
        "td,th{border-bottom:1px solid #ddd;padding:2px 8px;text-align:left}.sub{color:#666}"
        "img{max-width:100%}td.alert,li.alert{color:#b00020;font-weight:bold}"
        "h2{font-size:1.15em;margin-top:1.6em}ul.todo li{margin:.3em 0}")


def _chart(title: str, png: str | None) -> str:
    body = f"<img alt='{html.escape(title)}' src='data:image/png;base64,{png}'>" if png \
        else "<p class='sub'>no data</p>"
    return f"<h2>{html.escape(title)}</h2>{body}"


def _title(m: Metric) -> str:
    return m.label + (" (alert below)" if m.breach == "<" else "")


def _runs_up_to(db: Database, record: run_records.RunRecord, count: int
                ) -> list[run_records.RunRecord]:
    """The model version's last ``count`` runs up to ``record``'s, oldest first."""
    return run_records.of_model_up_to(db, record, count)[::-1]


def _run_labels(runs: list[run_records.RunRecord], history: list[dict[str, Any]]
                ) -> dict[str, str]:
    """A run's label on the history charts: the dates it scored (its tranches), else the
    day and time it started."""
    tranches: dict[str, set[str]] = defaultdict(set)
    for r in history:
        tranches[r["run_id"]].add(r["tranche"])
    labels = {}
    for run in runs:
        days = sorted(tranches.get(run.run_id, ()))
        if days and all(len(d) == 10 and d[4] == d[7] == "-" for d in days):
            labels[run.run_id] = days[0] if len(days) == 1 else f"{days[0]} to {days[-1][5:]}"
        else:
            labels[run.run_id] = run.started_at[:16].replace("T", " ")
    return labels


def _series(history: list[dict[str, Any]], m: Metric, labels: dict[str, str], current: str
            ) -> list[charts.Point]:
    """One point per run: a share charted with its interval pooled over the run's
    tranches (with its Wilson interval), any other metric its worst tranche (the
    lowest where lower values alert; ``report_text.worst_row``: an alert first, never a
    tranche too small to judge over one that was judged); and the threshold."""
    by_run: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in history:
        if r["metric"] == m.name and r["value"] is not None and r["value"] == r["value"]:
            by_run[r["run_id"]].append(r)
    points = []
    for run_id, label in labels.items():
        found = by_run.get(run_id)
        if not found:
            continue
        threshold = found[-1]["threshold"]
        if m.chart == INTERVAL:
            from tracking.statistics import wilson  # scipy: only for a report with accuracy

            n = sum(r["n"] for r in found)
            correct = round(sum(r["value"] * r["n"] for r in found))
            low, high = wilson(correct, n)
            points.append(charts.Point(label, correct / n, low, high, threshold,
                                       run_id == current))
        else:
            worst = worst_row(found, m.breach == "<")
            assert worst is not None  # found holds a row
            points.append(charts.Point(label, worst["value"], threshold=threshold,
                                       current=run_id == current))
    return points


def _pair_png(rows: list[dict[str, Any]], m: Metric) -> str | None:
    mine = {k: v for k, (v, _) in weighted(rows, m.name).items()}
    ref = {k: v for k, (v, _) in weighted(rows, f"{m.name}_reference").items()}
    keys = sorted(mine)
    return charts.pair_png(keys, [mine[k] for k in keys],
                           [ref.get(k, 0.0) for k in keys] if ref else None, m.axis)


def _changes(rows: list[dict[str, Any]], m: Metric) -> str:
    """The 10 slices of ``m`` that moved most: each row's change and its reference (the
    row's threshold)."""
    moved = sorted((r for r in rows if r["metric"] == m.name),
                   key=lambda r: -abs(r["value"]))[:10]
    if not moved:
        return f"<h2>{html.escape(m.label)}</h2><p class='sub'>none measured</p>"
    body = "".join(f"<tr><td>{html.escape(r['tranche'])}</td><td>{html.escape(r['slice'])}"
                   f"</td><td>{r['threshold']:.4g}</td><td>{r['value'] + r['threshold']:.4g}"
                   f"</td><td>{r['value']:+.4g}</td></tr>" for r in moved)
    return (f"<h2>{html.escape(m.label)}</h2><table><tr><th>tranche</th>"
            f"<th>{html.escape(m.axis)}</th><th>reference</th><th>this run</th>"
            "<th>change</th></tr>" + body + "</table>")


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
