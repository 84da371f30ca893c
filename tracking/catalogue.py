"""The catalogue of tracked metrics: every figure of the ``monitoring`` table, once.

Each ``Metric`` names a figure and says how it is computed from a tranche's ``Evidence``
(its profile against the reference's, or the run's counts at the launcher), which
``tracking.<key>`` threshold judges it and in which direction, the significance test a
breach also needs, what it means to the retraining policy (a drift, accuracy, or a
figure that never alerts), and how the report shows it (its label and chart). The
pipeline (``tracking.metrics.compare``), the retraining decision and the report iterate
over ``METRICS``; a new metric is one entry here and, if judged, its threshold key.

A judged row with a significance test is ``insufficient`` when the test cannot reach
significance at its sample size (the smallest p-value it could give is not below the
level of its stage, ``level``), ``alert`` when it breaches its threshold and its
p-value is below that level, else ``ok``; the run's family of tests is then corrected
(Holm, ``tracking.metrics.compare_run``) so the chance of any false alert in a run is at
most ``tracking.significance``. A judged row without a test (the importance ranking:
nDCG has no sampling distribution to test against) is ``insufficient`` below
``tracking.min_records`` records. A figure without a threshold is ``ok``.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from tracking import labelled, oov, statistics
from tracking.evidence import Evidence
from tracking.labelled import Tested
from tracking.policy import ALERT, INSUFFICIENT, OK

# What an alert means to the retraining policy (tracking.policy).
DRIFT, ACCURACY, FIGURE = "drift", "accuracy", "figure"
# Where a metric is computed: from the tranche's profile by the pipeline, or from the
# run's counts by the launcher once the pipeline is done.
PIPELINE, LAUNCHER = "pipeline", "launcher"
# How the report shows a metric besides its table row.
HISTORY = "history"  # worst tranche of each of the last runs, with the threshold
INTERVAL = "interval"  # a share pooled over each run's tranches, with its 95% interval
PAIR = "pair"  # bars per slice against the "<name>_reference" rows
CHANGES = "changes"  # the slices that moved most, a table
REASONS = "reasons"  # records by slice (stage: reason), a table
# What a drift metric watches, for the report's advice: the texts coming in, or the
# model's predictions of them.
INPUT, PREDICTIONS = "input", "predictions"
_BREACH = {">=": operator.ge, ">": operator.gt, "<": operator.lt}


@dataclass(frozen=True)
class MetricRow:
    metric: str
    slice: str
    value: float
    n: int
    ci_low: float | None = None
    ci_high: float | None = None
    threshold: float | None = None
    status: str = OK
    p_value: float | None = None  # of the row's test; not stored
    hypothesis: str = ""  # the test's name: rows sharing a test share one hypothesis


def _scored(e: Evidence) -> int:
    return e.t.n


@dataclass(frozen=True)
class Metric:
    """One tracked figure. ``value`` computes a single row (slice ""; None: no row);
    ``rows`` computes any number of rows instead. A judged metric's threshold is the
    ``tracking.<threshold>`` key, added to ``baseline`` (the reference's own figure)
    when there is one; a baseline of None leaves the row unjudged."""

    name: str
    label: str  # the report's words for it
    kind: str = FIGURE  # DRIFT, ACCURACY or FIGURE
    value: Callable[[Evidence], float | None] | None = None
    rows: Callable[[Metric, Evidence], list[MetricRow]] | None = None
    threshold: str | None = None
    breach: str = ">="  # value <breach> threshold is a breach: ">=", ">" or "<"
    baseline: Callable[[Evidence], float | None] | None = None
    test: Callable[[Evidence], Tested] | None = None  # p-value a breach must be below
    hypothesis: str = ""  # the test's name where several metrics share it
    sample: Callable[[Evidence], int] = _scored  # records judged; too few: insufficient
    stage: str = PIPELINE  # or LAUNCHER
    chart: str = ""  # HISTORY, INTERVAL, PAIR, CHANGES, REASONS or "" (the table only)
    axis: str = ""  # what a slice is, on a chart's axis or a table's column
    in_table: bool = True  # in the report's table of every figure
    watches: str = ""  # INPUT or PREDICTIONS, for a drift metric
    core: bool = False  # judges whether a tracked run's predictions could be judged at all

    def compute(self, e: Evidence) -> list[MetricRow]:
        """The metric's rows; a figure that is not a finite number (a model with NaN
        weights gives NaN importance) is no row, as a figure that cannot be made."""
        if self.rows is not None:
            return [r for r in self.rows(self, e) if math.isfinite(r.value)]
        value = self.value(e) if self.value is not None else None
        return [] if value is None or not math.isfinite(value) else [judged(self, e, value)]

    def limit(self, e: Evidence) -> float | None:
        if self.threshold is None:
            return None
        threshold = float(getattr(e.policy, self.threshold))
        if self.baseline is None:
            return threshold
        base = self.baseline(e)
        if base is None:
            return None
        return base - threshold if self.breach == "<" else base + threshold


def level(significance: float, stage: str) -> float:
    """The family-wise level of ``stage``'s tests: ``significance`` shared between the
    pipeline's and the launcher's families in proportion to their tests per tranche."""
    tests = {m.hypothesis or m.name: m.stage for m in METRICS if m.test is not None}
    return significance * sum(1 for s in tests.values() if s == stage) / max(1, len(tests))


def judged(m: Metric, e: Evidence, value: float) -> MetricRow:
    """``m``'s row of ``value``, judged by its threshold, direction and test."""
    n, limit = m.sample(e), m.limit(e)
    if limit is None:
        return MetricRow(m.name, "", value, n)
    breach = _BREACH[m.breach](value, limit)
    if m.test is None:
        status = INSUFFICIENT if n < e.policy.min_records else (ALERT if breach else OK)
        return MetricRow(m.name, "", value, n, threshold=limit, status=status)
    p, floor = m.test(e)
    alpha = level(e.policy.significance, m.stage)
    status = INSUFFICIENT if floor >= alpha else (ALERT if breach and p < alpha else OK)
    return MetricRow(m.name, "", value, n, threshold=limit, status=status, p_value=p,
                     hypothesis=m.hypothesis or m.name)


def _bins(edges: np.ndarray) -> list[str]:
    return [f"{lo:.2f}-{hi:.2f}" for lo, hi in zip(edges[:-1], edges[1:])]


# Class shares
def _class_share(m: Metric, e: Evidence) -> list[MetricRow]:
    t = e.t
    return [MetricRow(m.name, c, float(t.class_counts[i] / max(1, t.n)), t.n,
                      *statistics.wilson(int(t.class_counts[i]), t.n))
            for i, c in enumerate(t.classes)]


def _class_share_reference(m: Metric, e: Evidence) -> list[MetricRow]:
    if not e.compared:
        return []
    q = e.ref.class_counts / e.ref.n
    return [MetricRow(m.name, c, float(q[i]), e.ref.n) for i, c in enumerate(e.ref.classes)]


def _class_psi(e: Evidence) -> float | None:
    return statistics.psi(e.class_shares.observed, e.class_shares.expected) \
        if e.compared else None


def _class_js(e: Evidence) -> float | None:
    return statistics.jensen_shannon(e.class_shares.observed, e.class_shares.expected) \
        if e.compared else None


def _class_linf(e: Evidence) -> float | None:
    if not e.compared:
        return None
    return float(np.max(np.abs(e.t.class_counts / e.t.n - e.ref.class_counts / e.ref.n)))


def _class_test(e: Evidence) -> Tested:
    return e.class_shares.p_value, e.class_shares.floor


# Scores
def _score_histogram(m: Metric, e: Evidence) -> list[MetricRow]:
    return [MetricRow(m.name, b, float(v), e.t.n) for b, v in
            zip(_bins(statistics.SCORE_BINS), statistics.histogram(e.t.score))]


def _score_histogram_reference(m: Metric, e: Evidence) -> list[MetricRow]:
    if not e.scores_compared:
        return []
    return [MetricRow(m.name, b, float(v), e.ref.n) for b, v in
            zip(_bins(statistics.SCORE_BINS), statistics.histogram(e.ref.score))]


def _score_ks(e: Evidence) -> float | None:
    return e.ks("score")[0] if e.scores_compared else None


def _score_wasserstein(e: Evidence) -> float | None:
    return statistics.wasserstein_between(e.t.score, e.ref.score) \
        if e.scores_compared else None


def _score_test(e: Evidence) -> Tested:
    return e.ks("score")[1], statistics.ks_floor(e.t.score.n, e.ref.score.n)


# Inputs
def _ks_of(sketch: str) -> Callable[[Evidence], float | None]:
    def value(e: Evidence) -> float | None:
        return e.ks(sketch)[0] if e.compared else None
    return value


def _ks_test_of(sketch: str) -> Callable[[Evidence], Tested]:
    def test(e: Evidence) -> Tested:
        return e.ks(sketch)[1], statistics.ks_floor(getattr(e.t, sketch).n,
                                                    getattr(e.ref, sketch).n)
    return test


def _oov_reference(e: Evidence) -> float | None:
    return e.ref.oov_share if e.compared else None


def _oov_test(e: Evidence) -> Tested:
    t = e.t
    if not t.tokens_total:
        return 1.0, 1.0
    return (statistics.binomial_greater(t.oov_total, t.tokens_total, e.ref.oov_share),
            statistics.binomial_floor(t.tokens_total, e.ref.oov_share))


def _checked(e: Evidence) -> int:
    """Texts preprocessed: those scored and those emptied by preprocessing."""
    return int(e.counts["valid"]) + int(e.counts.get("dead_preprocess", 0))


def _empty_share(m: Metric, e: Evidence) -> list[MetricRow]:
    emptied, checked = int(e.counts.get("dead_preprocess", 0)), _checked(e)
    share = emptied / checked if checked else 0.0
    if not checked:
        return [MetricRow(m.name, "", share, checked, status=INSUFFICIENT)]
    return [judged(m, e, share)]


def _empty_reference(e: Evidence) -> float | None:
    share = e.figures.get("empty_share")
    return None if share is None else float(share)


def _empty_test(e: Evidence) -> Tested:
    reference = float(e.figures["empty_share"])
    return (statistics.binomial_greater(int(e.counts.get("dead_preprocess", 0)),
                                        _checked(e), reference),
            statistics.binomial_floor(_checked(e), reference))


def _oov_tokens(m: Metric, e: Evidence) -> list[MetricRow]:
    """The new out-of-vocabulary tokens: share of the tranche's documents with its
    bounds, documents, and the reference's share as the threshold column."""
    return [MetricRow(m.name, x.token, x.share, x.docs, x.low, x.high, threshold=x.reference)
            for x in e.new_tokens]


def _oov_examples(m: Metric, e: Evidence) -> list[MetricRow]:
    """Example document ids of each new token: slice ``oov.example_slice``."""
    return [MetricRow(m.name, oov.example_slice(x.token, doc), float(i), x.docs)
            for x in e.new_tokens for i, doc in enumerate(x.examples)]


def _dead_letters(m: Metric, e: Evidence) -> list[MetricRow]:
    return [MetricRow(m.name, f"{stage}: {reason}", float(n), n)
            for stage, reason, n in e.dead_letters]


# Accuracy, where records carry a true label (tracking.labelled)


def _accuracy(m: Metric, e: Evidence) -> list[MetricRow]:
    """Alert when accuracy is below the reference's less ``tracking.accuracy_drop``,
    significantly (one-sided binomial test); shown with its Wilson interval."""
    n = e.t.labels
    if n == 0:
        return [MetricRow(m.name, "", float("nan"), 0, status=INSUFFICIENT)]
    low, high = statistics.wilson(labelled.correct(e), n)
    return [replace(judged(m, e, labelled.correct(e) / n), ci_low=low, ci_high=high)]


def _macro_f1(m: Metric, e: Evidence) -> list[MetricRow]:
    if not e.t.labels:
        return []
    confusion = labelled.confusion(e)
    return [MetricRow(m.name, "", statistics.macro_f1(confusion), e.t.labels,
                      *statistics.macro_f1_interval(confusion), status=labelled.labelled_status(e))]


def _recall(m: Metric, e: Evidence) -> list[MetricRow]:
    confusion, rows = e.t.confusion, []
    for i, c in enumerate(e.t.classes):
        support = int(confusion[i].sum())
        if support:
            rows.append(MetricRow(m.name, c, float(confusion[i, i] / support), support,
                                  *statistics.wilson(int(confusion[i, i]), support),
                                  status=labelled.labelled_status(e)))
    return rows


# Importance: the tranche's ranking of the features against the reference's
def _importance_rows(e: Evidence) -> int:
    return e.ranking.n if e.ranking is not None else 0


def _importance_change(m: Metric, e: Evidence) -> list[MetricRow]:
    """The 10 features whose importance moved most; threshold: the reference's."""
    r = e.ranking
    if r is None:
        return []
    moved = sorted(r.columns, key=lambda i: -abs(float(r.mine[i]) - r.ref_value.get(i, 0.0)))
    moved = moved[:10]
    labels = dict(zip(moved, e.names(moved))) if e.names else {}
    return [MetricRow(m.name, r.ref_name.get(i) or labels.get(i) or str(i),
                      float(r.mine[i]) - r.ref_value.get(i, 0.0), r.n,
                      threshold=r.ref_value.get(i, 0.0)) for i in moved]


METRICS: tuple[Metric, ...] = (
    Metric("class_share", "Class shares", rows=_class_share, chart=PAIR,
           axis="predicted class"),
    Metric("class_share_reference", "Class shares of the reference",
           rows=_class_share_reference),
    Metric("class_psi", "Class shares: PSI", DRIFT, _class_psi, threshold="psi",
           test=_class_test, hypothesis="class_shares", chart=HISTORY, watches=PREDICTIONS,
           core=True),
    Metric("class_js", "Class shares: Jensen-Shannon distance", DRIFT, _class_js,
           threshold="js_distance", test=_class_test, hypothesis="class_shares",
           watches=PREDICTIONS),
    Metric("class_linf", "Class shares: largest difference", DRIFT, _class_linf,
           threshold="linf", test=_class_test, hypothesis="class_shares", watches=PREDICTIONS),
    Metric("score_histogram", "Scores", rows=_score_histogram, chart=PAIR,
           axis="top probability", in_table=False),
    Metric("score_histogram_reference", "Scores of the reference",
           rows=_score_histogram_reference, in_table=False),
    Metric("score_ks", "Scores: Kolmogorov-Smirnov", DRIFT, _score_ks, threshold="ks",
           test=_score_test, hypothesis="scores", chart=HISTORY, watches=PREDICTIONS, core=True),
    Metric("score_wasserstein", "Scores: Wasserstein distance", DRIFT, _score_wasserstein,
           threshold="wasserstein", test=_score_test, hypothesis="scores", chart=HISTORY,
           watches=PREDICTIONS),
    Metric("length_ks", "Text length: Kolmogorov-Smirnov", DRIFT, _ks_of("length"),
           threshold="length_ks", test=_ks_test_of("length"), chart=HISTORY, watches=INPUT),
    Metric("tokens_ks", "Tokens per text: Kolmogorov-Smirnov", DRIFT, _ks_of("tokens"),
           threshold="length_ks", test=_ks_test_of("tokens"), watches=INPUT),
    Metric("oov_share", "Out-of-vocabulary share", DRIFT, lambda e: e.t.oov_share,
           threshold="oov_increase", breach=">", baseline=_oov_reference, test=_oov_test,
           chart=HISTORY, watches=INPUT),
    Metric("oov_token", "New out-of-vocabulary tokens", rows=_oov_tokens, axis="token"),
    Metric("oov_token_example", "Documents with a new out-of-vocabulary token",
           rows=_oov_examples, in_table=False),
    Metric("empty_share", "Share emptied by preprocessing", DRIFT, rows=_empty_share,
           threshold="empty_increase", breach=">", baseline=_empty_reference,
           test=_empty_test, sample=_checked, stage=LAUNCHER, chart=HISTORY, watches=INPUT),
    Metric("accuracy_estimated", "Accuracy estimated from the scores (calibrated)", DRIFT,
           labelled.accuracy_estimated, threshold="accuracy_drop", breach="<",
           baseline=labelled.accuracy_reference, test=labelled.accuracy_estimated_test,
           chart=HISTORY, watches=PREDICTIONS),
    Metric("accuracy", "Accuracy", ACCURACY, rows=_accuracy, threshold="accuracy_drop",
           breach="<", baseline=labelled.accuracy_reference, test=labelled.accuracy_test,
           sample=labelled.labels, chart=INTERVAL),
    Metric("unknown_label_share", "Labels outside the model's classes", ACCURACY,
           labelled.unknown_label_share, threshold="unknown_labels", breach=">",
           test=labelled.unknown_label_test, sample=labelled.labels, chart=HISTORY),
    Metric("macro_f1", "Macro-F1", rows=_macro_f1),
    Metric("recall", "Recall", rows=_recall),
    Metric("importance_ndcg", "Importance ranking: nDCG@50", DRIFT,
           lambda e: e.ranking.ndcg() if e.ranking else None,
           threshold="importance_ndcg", breach="<", sample=_importance_rows, chart=HISTORY,
           watches=PREDICTIONS),
    Metric("importance_tau", "Importance ranking: Kendall's tau",
           value=lambda e: e.ranking.tau() if e.ranking else None,
           sample=_importance_rows),
    Metric("importance_change", "Features whose importance moved most",
           rows=_importance_change, chart=CHANGES, axis="feature"),
    Metric("importance_skipped", "Importance: batches not measured (out of time or failed)",
           value=lambda e: float(e.t.importance_skipped) if e.t.importance_skipped else None,
           sample=_importance_rows),
    Metric("dead_letters", "Dead letters by reason", rows=_dead_letters, stage=LAUNCHER,
           chart=REASONS, axis="stage: reason"),
)
BY_NAME = {m.name: m for m in METRICS}
DRIFT_METRICS = tuple(m.name for m in METRICS if m.kind == DRIFT)  # alert after a streak
ACCURACY_METRICS = tuple(m.name for m in METRICS if m.kind == ACCURACY)  # alert at once


def charted(chart: str) -> tuple[Metric, ...]:
    """The metrics the report shows in charts of kind ``chart``, in catalogue order."""
    return tuple(m for m in METRICS if m.chart == chart)


def compute(stage: str, e: Evidence) -> list[MetricRow]:
    """Every row of the metrics computed at ``stage`` (``PIPELINE`` or ``LAUNCHER``)."""
    return [row for m in METRICS if m.stage == stage for row in m.compute(e)]
