"""The report's words: its banner, a plain-language summary of what changed, and what to
do about each kind of alert, from a run's ``monitoring`` rows.

The banner is one of OK (no alert, the predictions judged), DRIFT (an alert, no
retraining requested), RETRAIN (this run requested retraining) and INSUFFICIENT (no
alert, and the class-share and score tests could not be judged in any tranche: too few
records to reach significance, or no reference). The
advice follows the kind of alert: input drift (text length, tokens, vocabulary, texts
emptied) asks to check the source before anything else; an accuracy drop with stable
inputs asks to retrain; labels outside the model's classes ask to map them or train
on the new classes; a shift of the predictions alone asks to check a labelled sample.
"""

from __future__ import annotations

import html
from collections import defaultdict
from typing import Any

from tracking import catalogue
from tracking.oov import parse_example
from tracking.policy import ALERT, INSUFFICIENT

Rows = list[dict[str, Any]]
INPUT = {m.name for m in catalogue.METRICS if m.watches == catalogue.INPUT}
PREDICTIONS = {m.name for m in catalogue.METRICS if m.watches == catalogue.PREDICTIONS}
CORE = {m.name for m in catalogue.METRICS if m.core}  # what every tracked run is judged by
TOP_CLASSES = 8  # classes charted by change; the rest are "other"
TOP_TOKENS, TOKEN_EXAMPLES = 5, 2  # new out-of-vocabulary tokens named, example ids each


def weighted(rows: Rows, metric: str) -> dict[str, tuple[float, int]]:
    """Per slice: the n-weighted mean over the run's tranches, and the records."""
    total: dict[str, float] = defaultdict(float)
    weight: dict[str, int] = defaultdict(int)
    for r in rows:
        if r["metric"] == metric and r["value"] is not None and r["value"] == r["value"]:
            total[r["slice"]] += r["value"] * r["n"]
            weight[r["slice"]] += r["n"]
    return {k: (total[k] / weight[k], weight[k]) for k in total if weight[k]}


def class_moves(rows: Rows, top: int = TOP_CLASSES) -> list[tuple[str, float, float]]:
    """(class, this run's share, the reference's) of the classes that moved most, and
    "other" for the rest, largest change first."""
    mine = {k: v for k, (v, _) in weighted(rows, "class_share").items()}
    ref = {k: v for k, (v, _) in weighted(rows, "class_share_reference").items()}
    if not mine or not ref:
        return []
    moved = sorted(set(mine) | set(ref), key=lambda c: -abs(mine.get(c, 0) - ref.get(c, 0)))
    out = [(c, mine.get(c, 0.0), ref.get(c, 0.0)) for c in moved[:top]]
    if len(moved) > top:
        rest = moved[top:]
        out.append((f"other ({len(rest)} classes)", sum(mine.get(c, 0.0) for c in rest),
                    sum(ref.get(c, 0.0) for c in rest)))
    return out


def _alerted(rows: Rows) -> set[str]:
    return {r["metric"] for r in rows if r["status"] == ALERT}


def banner(run_status: str, rows: Rows, reasons: list[str]) -> str:
    alerts = [r for r in rows if r["status"] == ALERT]
    judged = [r for r in rows if r["threshold"] is not None or r["status"] == INSUFFICIENT]
    core = [r for r in judged if r["metric"] in CORE]
    if reasons:
        kind, text = "retrain", "retraining requested: " + "; ".join(reasons)
    elif alerts:
        kind, text = "drift", "alerts: " + ", ".join(
            sorted({f"{r['metric']} on {r['tranche']}" for r in alerts}))
    elif not core or all(r["status"] == INSUFFICIENT for r in core):
        kind, text = "insufficient", "the predictions could not be judged: too few " \
            "records for the class-share and score tests, or no reference to compare with"
    else:
        short = sum(r["status"] == INSUFFICIENT for r in judged)
        kind, text = "ok", "no tracked figure is beyond its threshold" + (
            f" ({short} of {len(judged)} too small to judge)" if short else "")
    return (f"<p class='status {kind}'><b>{html.escape(kind.upper())}</b> &mdash; "
            f"{html.escape(text)} <span class='sub'>(run status {html.escape(run_status)})"
            "</span></p>")


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def worst_row(found: Rows, lower: bool) -> dict[str, Any] | None:
    """The row a sentence or chart quotes of several tranches' rows of one metric: the
    worst alert, else the worst judged row, else (all too small to judge) the worst:
    never a tranche too small to judge over one that was judged."""
    alerts = [r for r in found if r["status"] == ALERT]
    judged = [r for r in found if r["status"] != INSUFFICIENT]
    group = alerts or judged or found
    return (min if lower else max)(group, key=lambda r: r["value"]) if group else None


def _worst(rows: Rows, metric: str) -> dict[str, Any] | None:
    found = [r for r in rows if r["metric"] == metric and r["value"] is not None
             and r["value"] == r["value"]]
    lower = metric in catalogue.BY_NAME and catalogue.BY_NAME[metric].breach == "<"
    return worst_row(found, lower)


def _mean_score(rows: Rows, metric: str) -> float | None:
    bins = weighted(rows, metric)
    if not bins:
        return None
    return sum(v * sum(map(float, k.split("-"))) / 2 for k, (v, _) in bins.items())


def _lines(rows: Rows) -> list[tuple[str, bool]]:
    """(sentence, is it an alert) of what changed."""
    out = []
    for c, mine, ref in class_moves(rows, 3):
        if abs(mine - ref) >= 0.005 and not c.startswith("other"):
            out.append((f"Predicted '{c}': {_pct(mine)} of records (reference {_pct(ref)}).",
                        "class_psi" in _alerted(rows) or "class_linf" in _alerted(rows)))
    now, then = _mean_score(rows, "score_histogram"), _mean_score(rows,
                                                                  "score_histogram_reference")
    ks = _worst(rows, "score_ks")
    if now is not None and then is not None and ks is not None:
        out.append((f"Mean confidence (top probability) {now:.2f}, reference {then:.2f} "
                    f"(Kolmogorov-Smirnov {ks['value']:.2f}).", ks["status"] == ALERT))
    for metric, words in (("oov_share", "Out-of-vocabulary tokens"),
                          ("empty_share", "Texts emptied by preprocessing"),
                          ("unknown_label_share", "Labels outside the model's classes")):
        r = _worst(rows, metric)
        if r is not None and (r["value"] or r["status"] == ALERT):
            limit = "" if r["threshold"] is None else f" (alert above {_pct(r['threshold'])})"
            out.append((f"{words}: {_pct(r['value'])}{limit}.", r["status"] == ALERT))
    for metric, words in (("length_ks", "Text length"), ("tokens_ks", "Tokens per text")):
        r = _worst(rows, metric)
        if r is not None and r["status"] == ALERT:
            out.append((f"{words} differ from the reference's (Kolmogorov-Smirnov "
                        f"{r['value']:.2f}).", True))
    for metric, words in (("accuracy", "Accuracy"),
                          ("accuracy_estimated", "Accuracy estimated without labels")):
        r = _worst(rows, metric)
        if r is not None:
            limit = "" if r["threshold"] is None else f", alert below {r['threshold']:.3f}"
            labels = f" on {r['n']} labels" if metric == "accuracy" else ""
            out.append((f"{words}: {r['value']:.3f}{labels}{limit}.", r["status"] == ALERT))
    return out


def new_tokens(rows: Rows, top: int = TOP_TOKENS) -> list[tuple[str, int, float, list[str]]]:
    """(token, documents, their share of the documents of the tranches where it is new,
    example ids) of the run's new out-of-vocabulary tokens (the ``oov_token`` rows of
    its tranches), most documents first."""
    docs: dict[str, int] = defaultdict(int)
    where: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        if r["metric"] == "oov_token":
            docs[r["slice"]] += int(r["n"])
            where[r["slice"]].add(r["tranche"])
    if not docs:
        return []
    scored = {r["tranche"]: int(r["n"]) for r in rows  # each tranche's records
              if r["metric"] == "class_share"}
    examples: dict[str, list[tuple[float, str, str]]] = defaultdict(list)
    for r in rows:
        found = parse_example(r["slice"]) if r["metric"] == "oov_token_example" else None
        if found is not None:
            examples[found[0]].append((r["value"], r["tranche"], found[1]))
    ranked = sorted(docs, key=lambda t: (-docs[t], t))[:top]
    out = []
    for t in ranked:
        of = sum(scored.get(tranche, 0) for tranche in where[t])
        out.append((t, docs[t], docs[t] / of if of else 0.0,
                    list(dict.fromkeys(d for _, _, d in sorted(examples[t])))[:TOKEN_EXAMPLES]))
    return out


def _tokens_item(rows: Rows) -> str:
    """The summary's line of new out-of-vocabulary tokens, HTML."""
    found = new_tokens(rows)
    if not found:
        return ""
    named = "; ".join(
        f"<code>{html.escape(t)}</code> ({n} docs, share {_pct(share)} where new"
        + (", e.g. doc ids " + ", ".join(html.escape(d) for d in ids) if ids else "") + ")"
        for t, n, share, ids in found)
    alert = "alert" if "oov_share" in _alerted(rows) else ""
    return f"<li class='{alert}'>Top new out-of-vocabulary tokens: {named}.</li>"


def summary(rows: Rows) -> str:
    lines = _lines(rows)
    tokens = _tokens_item(rows)
    if not lines and not tokens:
        return "<h2>What changed</h2><p class='sub'>nothing measured</p>"
    items = "".join(f"<li class='{'alert' if alert else ''}'>{html.escape(text)}</li>"
                    for text, alert in lines)
    return f"<h2>What changed</h2><ul>{items}{tokens}</ul>"


def _advice(alerted: set[str], reasons: list[str]) -> list[str]:
    inputs, out = alerted & INPUT, []
    if inputs:
        out.append("Input drift (" + ", ".join(sorted(inputs)) + "): the texts are no longer "
                   "like the reference's. Check the source first: a new producer or export, "
                   "truncation, encoding, another language. Retraining on broken input bakes "
                   "it in; retrain only once the new input is confirmed as the new normal.")
    if "accuracy" in alerted:
        out.append("Accuracy dropped while the inputs look the same: what the texts mean "
                   "for the classes has changed. Retrain on recent labelled data."
                   if not inputs else "Accuracy dropped together with input drift: fix or "
                   "confirm the input before retraining.")
    if "unknown_label_share" in alerted:
        out.append("Labels name classes the model does not know: new classes appeared or "
                   "the label feed changed. Map the labels to the model's classes, or add "
                   "the new classes to the training data and retrain.")
    if alerted & PREDICTIONS and not inputs and "accuracy" not in alerted:
        out.append("The predictions shifted while the inputs look alike: the mix of texts "
                   "changed (more of some classes) or the model degrades. Check a labelled "
                   "sample: if accuracy holds, the model is fine; if not, retrain.")
    if reasons:
        out.append("Retraining was requested for this run (see the banner); the configured "
                   "tracking.command ran if there is one (beamscore triggers list).")
    return out


def actions(rows: Rows, reasons: list[str]) -> str:
    advice = _advice(_alerted(rows), reasons)
    if not advice:
        return ""
    items = "".join(f"<li>{html.escape(a)}</li>" for a in advice)
    return f"<h2>What to do</h2><ul class='todo'>{items}</ul>"
