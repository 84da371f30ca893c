"""Figures an on-call engineer can trust: macro-F1 and its interval as scikit-learn's,
labels outside the model's classes counted as errors, Holm's correction, the estimated
accuracy's test, the smallest attainable p-values, and true importance changes."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import f1_score

from tracking.catalogue import MetricRow
from tracking.metrics import compare, compare_run
from tracking.policy import ALERT, INSUFFICIENT, OK, TrackingPolicy
from tracking.profile import UNKNOWN_LABEL, BatchStats, Profile
from tracking.statistics import (
    binomial_floor,
    calibrated_accuracy_test,
    chi_square_floor,
    holm,
    ks_floor,
    macro_f1,
    macro_f1_interval,
)

CLASSES = [f"c{i}" for i in range(58)]


def _profile(predicted: np.ndarray, true: np.ndarray, classes: list[str] = CLASSES,
             importance: np.ndarray | None = None) -> Profile:
    n = len(predicted)
    rng = np.random.default_rng(n)
    return Profile(classes=classes).add(BatchStats(
        predicted=predicted, scores=rng.beta(5, 2, n), lengths=np.full(n, 100),
        tokens=np.full(n, 20), oov=np.zeros(n, np.int64), true=true,
        importance=None if importance is None else importance * n,  # a sum over n rows
        importance_rows=n if importance is not None else 0))


def _confusion(true: np.ndarray, pred: np.ndarray, k: int) -> np.ndarray:
    c = np.zeros((k, k), np.int64)
    np.add.at(c, (true, pred), 1)
    return c


@pytest.mark.parametrize("seed", range(20))
def test_macro_f1_of_a_small_tranche_is_scikit_learns_and_its_interval_holds_it(
        seed: int) -> None:
    """100 docs of 3 of a 58-class model's sections: the classes present only."""
    rng = np.random.default_rng(seed)
    true = rng.choice([4, 17, 30], 100)
    pred = np.where(rng.random(100) < 0.7, true, rng.integers(0, 58, 100))
    row = {r.metric: r for r in compare(_profile(pred, true), None, TrackingPolicy())
           if r.slice == ""}["macro_f1"]
    assert row.value == pytest.approx(f1_score(true, pred, average="macro"))
    assert row.ci_low is not None and row.ci_high is not None
    assert row.ci_low <= row.value <= row.ci_high


def test_the_macro_f1_interval_is_the_percentile_bootstrap_of_the_same_statistic() -> None:
    rng = np.random.default_rng(5)
    true = rng.choice(6, 300, p=[0.4, 0.2, 0.2, 0.1, 0.05, 0.05])
    pred = np.where(rng.random(300) < 0.75, true, rng.integers(0, 6, 300))
    confusion = _confusion(true, pred, 6)
    assert macro_f1(confusion) == pytest.approx(f1_score(true, pred, average="macro"))
    by_hand = []
    draws = np.random.default_rng(1).integers(0, 300, (400, 300))
    for pick in draws:  # row resampling with scikit-learn, an independent computation
        by_hand.append(f1_score(true[pick], pred[pick], average="macro"))
    low, high = macro_f1_interval(confusion, 2000)
    assert low == pytest.approx(np.percentile(by_hand, 2.5), abs=0.02)
    assert high == pytest.approx(np.percentile(by_hand, 97.5), abs=0.02)


def test_labels_outside_the_models_classes_are_errors_with_their_own_alert() -> None:
    """300 of 1,000 labels name a section the model does not know: accuracy counts them
    wrong and unknown_label_share alerts."""
    classes = ["a", "b", "c"]
    rng = np.random.default_rng(2)
    true = rng.integers(0, 3, 1000)
    pred = np.where(rng.random(1000) < 0.83, true, (true + 1) % 3)
    true[:300] = UNKNOWN_LABEL
    ref = _profile(rng.integers(0, 3, 3000), np.full(3000, -1), classes)
    ref.reference["accuracy"] = 0.83
    rows = {r.metric: r for r in compare(_profile(pred, true, classes), ref,
                                         TrackingPolicy()) if r.slice == ""}
    expected = float(np.sum(pred[300:] == true[300:]) / 1000)
    assert (rows["accuracy"].value, rows["accuracy"].n) == (pytest.approx(expected), 1000)
    assert rows["accuracy"].status == ALERT
    assert rows["unknown_label_share"].value == pytest.approx(0.3)
    assert rows["unknown_label_share"].status == ALERT
    shown = np.where(true == UNKNOWN_LABEL, "zzz", np.asarray(classes)[true.clip(0)])
    assert rows["macro_f1"].value == pytest.approx(
        f1_score(shown, np.asarray(classes)[pred], average="macro"))


def test_holm_is_statsmodels_step_down() -> None:
    p = [0.01, 0.04, 0.03, 0.005, 0.5]
    # by hand: sorted 0.005*5, 0.01*4, 0.03*3, 0.04*2, 0.5*1, running maximum
    assert holm(p) == pytest.approx([0.04, 0.09, 0.09, 0.025, 0.5])


def test_the_smallest_attainable_p_values_are_the_tests_at_their_extremes() -> None:
    q = np.array([0.6, 0.3, 0.1])
    assert chi_square_floor(q, 10) == pytest.approx(
        stats.chisquare([0, 0, 10], q * 10).pvalue)
    assert ks_floor(100, 100) == pytest.approx(
        stats.kstwobign.sf(1.0 * np.sqrt(50)))
    assert binomial_floor(5, 0.2) == pytest.approx(
        stats.binomtest(5, 5, 0.2, alternative="greater").pvalue)
    assert binomial_floor(5, 0.9, greater=False) == pytest.approx(
        stats.binomtest(0, 5, 0.9, alternative="less").pvalue)


def test_a_run_of_many_tranches_is_corrected_as_one_family() -> None:
    """A tranche whose class test alone is significant at 0.01 but not after Holm over a
    run of ten tranches raises no alert in that run, and does in a run of its own."""
    classes = ["a", "b"]
    ref = _profile(np.repeat([0, 1], [5000, 5000]), np.full(10000, -1), classes)
    edge = _profile(np.repeat([0, 1], [555, 445]), np.full(1000, -1), classes)
    policy = TrackingPolicy(linf=0.05)
    alone = {r.metric: r for r in compare(edge, ref, policy)}
    assert alone["class_linf"].p_value is not None
    assert 1e-4 < alone["class_linf"].p_value < 1e-3 and alone["class_linf"].status == ALERT
    calm = {f"t{i}": _profile(np.repeat([0, 1], [500, 500]), np.full(1000, -1), classes)
            for i in range(9)}
    run = compare_run(calm | {"edge": edge}, ref, policy)
    assert {r.metric: r.status for r in run["edge"]}["class_linf"] == OK


def test_importance_changes_are_true_for_features_outside_the_references_top() -> None:
    classes = ["a", "b"]
    ref_importance = np.linspace(1.0, 0.001, 400)
    ref = _profile(np.repeat([0, 1], [500, 500]), np.full(1000, -1), classes,
                   ref_importance)
    stored = Profile.from_json(ref.to_json(top_features=200))
    mine = ref_importance.copy()
    mine[350] += 0.5  # feature 350: outside the reference's top 200
    t = _profile(np.repeat([0, 1], [500, 500]), np.full(1000, -1), classes, mine)
    changes = {r.slice: (r.value, r.threshold) for r in compare(t, stored, TrackingPolicy())
               if r.metric == "importance_change"}
    value, reference = changes["350"]
    assert reference == pytest.approx(ref_importance[350], rel=1e-6)
    assert value == pytest.approx(0.5, rel=1e-5)


def _scored(n: int, low: float, high: float, seed: int, labelled: bool) -> Profile:
    """``n`` records scored uniformly in [low, high], each correct with probability its
    score (a calibrated model) when ``labelled``."""
    rng = np.random.default_rng(seed)
    scores = rng.uniform(low, high, n)
    predicted = rng.integers(0, 2, n)
    true = np.where(rng.random(n) < scores, predicted, 1 - predicted) if labelled \
        else np.full(n, -1)
    return Profile(classes=["a", "b"]).add(BatchStats(
        predicted=predicted, scores=scores, lengths=np.full(n, 100), tokens=np.full(n, 20),
        oov=np.zeros(n, np.int64), true=true))


def test_the_estimated_accuracy_alerts_only_when_its_test_says_so_too() -> None:
    """The label-free estimate is tested (one-sided z-test) and in the run's Holm family:
    a tranche scored far less confidently than the reference alerts; one just below the
    threshold, within its noise, does not; below tracking.min_records it is
    insufficient."""
    ref = _scored(5000, 0.5, 1.0, 1, labelled=True)
    ref.reference["accuracy"] = float(np.trace(ref.confusion) / ref.labelled)
    limit = ref.reference["accuracy"] - TrackingPolicy().accuracy_drop

    def row(t: Profile) -> MetricRow:
        [found] = [r for r in compare(t, ref, TrackingPolicy())
                   if r.metric == "accuracy_estimated"]
        return found

    unsure = row(_scored(1000, 0.5, 0.8, 2, labelled=False))
    assert unsure.value < limit - 0.05 and unsure.status == ALERT
    assert unsure.p_value is not None and unsure.p_value < 1e-6
    assert unsure.hypothesis == "accuracy_estimated"
    edge = row(_scored(300, 0.5, 0.94, 3, labelled=False))
    assert edge.threshold == pytest.approx(limit) and limit - 0.01 < edge.value < limit
    assert edge.status == OK and edge.p_value is not None and edge.p_value > 0.05
    assert row(_scored(150, 0.5, 0.6, 4, labelled=False)).status == INSUFFICIENT
    calm = {f"t{i}": _scored(1000, 0.5, 1.0, 10 + i, labelled=False) for i in range(5)}
    run = compare_run(calm, ref, TrackingPolicy())
    assert all(r.status == OK for rows in run.values() for r in rows
               if r.metric == "accuracy_estimated")


def test_a_sparse_calibration_bin_does_not_hide_an_accuracy_drop() -> None:
    """The smallest attainable p-value is a true bound: a bin of 2 labels whose
    accuracy is lowest does not make a 12-point drop in a well-labelled bin
    insufficient."""
    labelled, correct = np.zeros(20), np.zeros(20)
    labelled[[10, 11, 19]], correct[[10, 11, 19]] = [2, 400, 9600], [1, 340, 9410]
    reference = float(correct.sum() / labelled.sum())
    bins = np.zeros(20)
    bins[11] = 5000  # every record in the bin whose accuracy is 0.85
    p, floor = calibrated_accuracy_test(bins, labelled, correct, reference - 0.05,
                                        int(labelled.sum()), reference)
    assert p < 1e-4 and floor <= p
    for where in range(20):  # no tranche can go below the floor
        one = np.zeros(20)
        one[where] = 5000
        assert calibrated_accuracy_test(one, labelled, correct, reference - 0.05,
                                        int(labelled.sum()), reference)[0] >= floor
