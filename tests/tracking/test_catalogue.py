"""The catalogue of tracked metrics: its entries are consistent with the policy's keys,
the generic judging follows each metric's threshold, direction and test, and the
launcher's figures (share emptied by preprocessing, dead letters) are judged like the
pipeline's."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from tracking.catalogue import (
    ACCURACY,
    ACCURACY_METRICS,
    BY_NAME,
    CHANGES,
    DRIFT,
    DRIFT_METRICS,
    FIGURE,
    HISTORY,
    INTERVAL,
    LAUNCHER,
    METRICS,
    PAIR,
    PIPELINE,
    REASONS,
    Metric,
    charted,
    compute,
)
from tracking.evidence import Evidence
from tracking.metrics import launcher_rows
from tracking.policy import ALERT, INSUFFICIENT, OK, TrackingPolicy
from tracking.profile import BatchStats, Profile

POLICY_KEYS = {f.name for f in dataclasses.fields(TrackingPolicy)}


def test_every_entry_is_well_formed_and_judged_metrics_name_a_policy_key() -> None:
    assert len(BY_NAME) == len(METRICS)  # one entry per metric name
    for m in METRICS:
        assert m.kind in (DRIFT, ACCURACY, FIGURE) and m.stage in (PIPELINE, LAUNCHER), m.name
        assert m.chart in ("", HISTORY, INTERVAL, PAIR, CHANGES, REASONS), m.name
        assert m.breach in (">=", ">", "<") and m.label, m.name
        assert (m.value is None) != (m.rows is None), m.name  # one way to compute it
        if m.kind != FIGURE:
            assert m.threshold in POLICY_KEYS, m.name  # a tracking.<key> config key
        if m.chart == PAIR:
            assert f"{m.name}_reference" in BY_NAME and m.axis, m.name
    assert set(DRIFT_METRICS) == {
        "class_psi", "class_js", "class_linf", "score_ks", "score_wasserstein", "length_ks",
        "tokens_ks", "oov_share", "empty_share", "accuracy_estimated", "importance_ndcg"}
    assert ACCURACY_METRICS == ("accuracy", "unknown_label_share")
    assert [m.name for m in charted(HISTORY)] == [
        "class_psi", "score_ks", "score_wasserstein", "length_ks", "oov_share", "empty_share",
        "accuracy_estimated", "unknown_label_share", "importance_ndcg"]


def _tranche(n: int, shares: list[float], seed: int = 0) -> Profile:
    rng, first = np.random.default_rng(seed), round(n * shares[0])
    return Profile(classes=["a", "b"]).add(BatchStats(
        predicted=np.repeat([0, 1], [first, n - first]), scores=rng.beta(5, 2, n),
        lengths=np.full(n, 100), tokens=np.full(n, 20), oov=np.zeros(n, np.int64),
        true=np.full(n, -1)))


def _gap(e: Evidence) -> float | None:
    """A toy drift metric: the difference of the first class's share."""
    if not e.compared:
        return None
    return abs(e.t.class_counts[0] / e.t.n - e.ref.class_counts[0] / e.ref.n)


@pytest.mark.parametrize(("breach", "n", "shares", "p_value", "floor", "status"), [
    (">=", 1000, [0.7, 0.3], 0.0, 0.0, ALERT),
    (">=", 1000, [0.5, 0.5], 0.0, 0.0, OK),  # below the threshold
    (">=", 1000, [0.7, 0.3], 0.5, 0.0, OK),  # a breach, but not significant
    (">=", 100, [0.7, 0.3], 0.0, 0.0, ALERT),  # few records, overwhelming evidence
    (">=", 100, [0.7, 0.3], 0.5, 0.5, INSUFFICIENT),  # the test cannot reach significance
    ("<", 1000, [0.5, 0.5], 0.0, 0.0, ALERT),  # alerts below its threshold
])
def test_a_metric_is_judged_by_its_threshold_key_direction_and_test(
        breach: str, n: int, shares: list[float], p_value: float, floor: float,
        status: str) -> None:
    toy = Metric("toy_gap", "First class's share: difference", DRIFT, _gap, threshold="linf",
                 breach=breach, test=lambda e: (p_value, floor))
    e = Evidence.of_tranche(_tranche(n, shares), _tranche(5000, [0.5, 0.5], 1),
                            TrackingPolicy(linf=0.1))
    [row] = toy.compute(e)
    assert (row.metric, row.threshold, row.n, row.status) == ("toy_gap", 0.1, n, status)
    assert row.value == pytest.approx(abs(shares[0] - 0.5))
    assert toy.compute(Evidence.of_tranche(_tranche(n, shares), None, TrackingPolicy())) == []


def test_a_baseline_threshold_is_added_to_the_references_figure_or_left_unjudged() -> None:
    share = BY_NAME["oov_share"]
    t = _tranche(1000, [0.5, 0.5])
    [alone] = share.compute(Evidence.of_tranche(t, None, TrackingPolicy()))
    assert (alone.threshold, alone.status) == (None, OK)
    ref = _tranche(1000, [0.5, 0.5], 2)
    ref.oov_total, ref.tokens_total = 100, 20_000
    [row] = share.compute(Evidence.of_tranche(t, ref, TrackingPolicy(oov_increase=0.01)))
    assert row.threshold == pytest.approx(0.005 + 0.01) and row.status == OK


@pytest.mark.parametrize(("emptied", "valid", "reference", "threshold", "status"), [
    (50, 950, 0.01, 0.06, OK),
    (200, 800, 0.01, 0.06, ALERT),
    (200, 800, None, None, OK),  # a reference without the figure: shown, not judged
    (20, 80, 0.01, 0.06, ALERT),  # 100 texts: overwhelming evidence alerts at any size
    (1, 1, 0.1, 0.15, INSUFFICIENT),  # 2 texts: the test cannot reach significance
])
def test_the_share_emptied_by_preprocessing_is_judged_against_the_reference(
        emptied: int, valid: int, reference: float | None, threshold: float | None,
        status: str) -> None:
    figures = {} if reference is None else {"empty_share": reference}
    rows = launcher_rows({"valid": valid, "dead_preprocess": emptied},
                         [("inference", "timeout", 3), ("validate", "empty text", 1)],
                         figures, TrackingPolicy())
    [empty] = [r for r in rows if r.metric == "empty_share"]
    assert (empty.value, empty.n, empty.status) == (emptied / (emptied + valid),
                                                    emptied + valid, status)
    assert empty.threshold == (None if threshold is None else pytest.approx(threshold))
    dead = {(r.slice, r.value, r.n, r.status) for r in rows if r.metric == "dead_letters"}
    assert dead == {("inference: timeout", 3.0, 3, OK), ("validate: empty text", 1.0, 1, OK)}


def test_each_stage_computes_only_its_own_metrics() -> None:
    t = _tranche(500, [0.5, 0.5])
    pipeline = {r.metric for r in compute(PIPELINE, Evidence.of_tranche(t, t, TrackingPolicy()))}
    launcher = {r.metric for r in launcher_rows({"valid": 10}, [("read", "bad json", 1)], {},
                                                TrackingPolicy())}
    assert launcher == {"empty_share", "dead_letters"}
    assert not pipeline & launcher
    assert pipeline <= {m.name for m in METRICS if m.stage == PIPELINE}


def test_the_family_holds_every_test_and_the_importance_ranking_is_an_effect_size() -> None:
    """The tests Holm corrects together are these, the estimated accuracy among them;
    the importance ranking alone alerts on its threshold without a test; the report's
    advice and banner read the catalogue."""
    from tracking.catalogue import INPUT, METRICS, PIPELINE, PREDICTIONS, level

    family = {m.hypothesis or m.name: m.stage for m in METRICS if m.test is not None}
    assert family == {
        "class_shares": "pipeline", "scores": "pipeline", "length_ks": "pipeline",
        "tokens_ks": "pipeline", "oov_share": "pipeline", "accuracy_estimated": "pipeline",
        "accuracy": "pipeline", "unknown_label_share": "pipeline", "empty_share": "launcher"}
    assert level(0.01, PIPELINE) == pytest.approx(0.01 * 8 / 9)
    assert [m.name for m in METRICS if m.threshold and m.test is None] == ["importance_ndcg"]
    assert {m.name for m in METRICS if m.watches == INPUT} == {
        "length_ks", "tokens_ks", "oov_share", "empty_share"}
    assert {m.name for m in METRICS if m.watches == PREDICTIONS} | \
        {m.name for m in METRICS if m.watches == INPUT} == set(DRIFT_METRICS)
    assert [m.name for m in METRICS if m.core] == ["class_psi", "score_ks"]


def test_a_figure_that_is_not_finite_is_no_row() -> None:
    """A model with NaN weights gives NaN importance: the figures made of it are not
    rows (never stored, judged or charted), as figures that cannot be made are not."""
    from tracking.catalogue import Metric, MetricRow
    from tracking.evidence import Ranking

    e = Evidence(TrackingPolicy())
    nan = float("nan")
    assert Metric("x", "X", value=lambda _: nan).compute(e) == []
    assert Metric("x", "X", value=lambda _: 0.5, sample=lambda _: 0).compute(e) == [
        MetricRow("x", "", 0.5, 0)]
    rows = Metric("x", "X", rows=lambda m, _: [MetricRow(m.name, "a", nan, 1),
                                                 MetricRow(m.name, "b", 1.0, 1)]).compute(e)
    assert [r.slice for r in rows] == ["b"]
    ranking = Ranking(np.array([0.3, nan, 0.1]), [0, 1, 2], {0: 0.5, 1: 0.4, 2: 0.1},
                      {}, [0, 1, 2], 10)
    assert np.isnan(ranking.ndcg()) and np.isnan(ranking.tau())
    finite = dataclasses.replace(ranking, mine=np.array([0.3, 0.2, 0.1]))
    assert finite.ndcg() == pytest.approx(1.0) and finite.tau() == pytest.approx(1.0)
