"""Tracking statistics against independent computations on the raw values."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats
from scipy.spatial.distance import jensenshannon

from tracking.metrics import compare
from tracking.policy import ALERT, INSUFFICIENT, OK, TrackingPolicy
from tracking.profile import BatchStats, Profile
from tracking.sketch import Sketch
from tracking.statistics import (
    holm,
    ks_between,
    psi,
    share_test,
    wasserstein_between,
    wilson,
)

CLASSES = ["a", "b", "c"]


def _sketch(values: np.ndarray) -> Sketch:
    s = Sketch()
    s.update(values)
    return s


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ks_and_wasserstein_on_sketches_match_scipy_on_the_raw_values(seed: int) -> None:
    rng = np.random.default_rng(seed)
    a, b = rng.beta(5, 2, 20_000), rng.beta(4, 2, 15_000)
    sa, sb = _sketch(a), _sketch(b)
    d, p_value = ks_between(sa, sb)
    exact = stats.ks_2samp(a, b)
    bound = 2 * max(sa.rank_error, sb.rank_error)  # each CDF within its rank error
    assert abs(d - exact.statistic) <= bound, (d, exact.statistic, bound)
    assert (p_value < 0.01) == (exact.pvalue < 0.01)
    w = wasserstein_between(sa, sb)
    assert abs(w - stats.wasserstein_distance(a, b)) <= bound  # values in [0, 1]


def test_psi_and_js_are_scipys() -> None:
    p, q = np.array([0.5, 0.3, 0.2]), np.array([0.4, 0.4, 0.2])
    by_hand = float(np.sum((p - q) * np.log(p / q)))
    assert psi(p, q) == pytest.approx(by_hand)
    assert jensenshannon(p, q, base=2) == pytest.approx(
        np.sqrt(0.5 * (stats.entropy(p, (p + q) / 2, base=2) + stats.entropy(q, (p + q) / 2,
                                                                              base=2))))


def test_with_every_class_expected_often_the_share_test_is_scipys_chi_square() -> None:
    counts, shares = np.array([430, 380, 190]), np.array([0.4, 0.4, 0.2])
    p, floor = share_test(counts, shares, 10_000, 5.0)
    assert p == pytest.approx(stats.chisquare(counts, shares * 1000).pvalue)
    assert floor == pytest.approx(stats.chisquare([0, 0, 1000], shares * 1000).pvalue)


@pytest.mark.parametrize("reference, counts", [
    ([0.5, 0.5, 0.0], [2000, 5000, 3000]),  # a class the reference never has: 30 %
    ([0.499, 0.499, 0.002], [200, 500, 300]),  # one it has 0.2 % of the time: 30 %
    ([0.5, 0.5, 0.0], [50, 44, 6]),  # 6 records where the reference has none
])
def test_a_shift_into_a_class_the_reference_never_or_rarely_has_is_evidence(
        reference: list[float], counts: list[int]) -> None:
    """Rare classes are pooled among themselves, never with a common one: a shift from a
    common class into a rare or new one cannot cancel out."""
    p, floor = share_test(np.array(counts), np.array(reference), 10_000, 5.0)
    assert p < 1e-4 and floor <= p


def test_a_tranche_with_every_class_expected_rarely_gets_no_class_share_test() -> None:
    """Every class expected fewer than 5 times (20 Zipf classes, 10 records): no test."""
    shares = 1 / np.arange(1, 21) / np.sum(1 / np.arange(1, 21))
    rng = np.random.default_rng(7)
    for _ in range(200):
        assert share_test(rng.multinomial(10, shares), shares, 10_000, 5.0) == (1.0, 1.0)


@pytest.mark.parametrize("shares, n", [
    ([0.6, 0.2, 0.1, 0.07, 0.03], 5),  # a few classes, a tiny tranche: mostly pooled
    ([0.7, 0.26, 0.03, 0.008, 0.002], 100),  # a pool expected 4 times: binomial
    ([0.5, 0.3, 0.15, 0.03, 0.02], 150),  # a pool expected 7.5 times: one category
    ([0.5, 0.49, 0.0], 2000),  # a class the reference never has
])
def test_the_share_test_rejects_a_true_hypothesis_no_more_often_than_its_level(
        shares: list[float], n: int) -> None:
    """Tranches drawn from the reference's own shares: rejected at 1 % at most about
    1 % of the time (the chi-square's approximation, the exact binomial test of the
    pool and their Bonferroni combination), every p-value at or above its floor."""
    q = np.array(shares)
    draw = np.where(q > 0, q, 0.5 / 10_000)
    rng = np.random.default_rng(5)
    rejected = 0
    for _ in range(3000):
        p, floor = share_test(rng.multinomial(n, draw / draw.sum()), q, 10_000, 5.0)
        assert floor <= p + 1e-12
        rejected += p < 0.01
    assert rejected <= 45  # 1.5 % of 3,000


@given(st.lists(st.integers(0, 50), min_size=2, max_size=8),
       st.lists(st.integers(0, 20), min_size=2, max_size=8))
def test_no_tranche_gets_a_p_value_below_the_floor(counts: list[int],
                                                   weights: list[int]) -> None:
    k = min(len(counts), len(weights))
    reference = np.array(weights[:k], float)
    if reference.sum() == 0:
        return
    p, floor = share_test(np.array(counts[:k]), reference / reference.sum(), 1000, 5.0)
    assert 0.0 <= floor <= p + 1e-12 <= 1.0 + 1e-12


def test_wilson_is_scipys_and_empty_samples_have_no_interval() -> None:
    low, high = wilson(45, 50)
    ci = stats.binomtest(45, 50).proportion_ci(method="wilson")
    assert (low, high) == (pytest.approx(ci.low), pytest.approx(ci.high))
    assert wilson(0, 0) == (None, None)


def _profile(predicted: np.ndarray, scores: np.ndarray, true: np.ndarray | None = None
             ) -> Profile:
    n = len(predicted)
    return Profile(classes=CLASSES).add(BatchStats(
        predicted=predicted, scores=scores, lengths=np.full(n, 100), tokens=np.full(n, 20),
        oov=np.zeros(n, np.int64), true=true if true is not None else np.full(n, -1)))


def _rows(t: Profile, ref: Profile) -> dict[str, tuple[float, str]]:
    return {r.metric: (r.value, r.status) for r in compare(t, ref, TrackingPolicy())
            if r.slice == ""}


def test_class_shift_alerts_at_any_size_the_test_can_judge() -> None:
    rng = np.random.default_rng(3)
    ref = _profile(rng.integers(0, 3, 5000), rng.beta(5, 2, 5000))
    same = _profile(rng.integers(0, 3, 2000), rng.beta(5, 2, 2000))
    shifted = _profile(rng.choice(3, 2000, p=[0.7, 0.2, 0.1]), rng.beta(5, 2, 2000))
    small = _profile(rng.choice(3, 50, p=[0.9, 0.05, 0.05]), rng.beta(5, 2, 50))
    tiny = _profile(np.zeros(3, np.int64), rng.beta(5, 2, 3))  # chi-square p >= 0.05
    assert _rows(same, ref)["class_psi"][1] == OK
    assert _rows(shifted, ref)["class_psi"][1] == ALERT
    assert _rows(small, ref)["class_psi"][1] == ALERT
    assert _rows(tiny, ref)["class_psi"][1] == INSUFFICIENT
    assert _rows(shifted, ref)["class_psi"][0] == pytest.approx(
        psi(np.bincount(shifted_pred := np.repeat(np.arange(3), shifted.class_counts),
                        minlength=3) / len(shifted_pred), ref.class_counts / ref.n))


def test_accuracy_alerts_only_when_significantly_below_the_reference() -> None:
    rng = np.random.default_rng(4)
    ref = _profile(rng.integers(0, 3, 3000), rng.beta(5, 2, 3000))
    ref.reference["accuracy"] = 0.9
    true = rng.integers(0, 3, 1000)
    good = _profile(np.where(rng.random(1000) < 0.9, true, (true + 1) % 3), rng.beta(5, 2, 1000),
                    true)
    bad = _profile(np.where(rng.random(1000) < 0.6, true, (true + 1) % 3), rng.beta(5, 2, 1000),
                   true)
    few = _profile(true[:2], rng.beta(5, 2, 2), (true[:2] + 1) % 3)  # p >= 0.12 ** 2
    assert _rows(good, ref)["accuracy"][1] == OK
    assert _rows(bad, ref)["accuracy"] == (pytest.approx(bad.confusion.trace() / 1000), ALERT)
    assert _rows(few, ref)["accuracy"][1] == INSUFFICIENT


def _by_metric(t: Profile, ref: Profile | None) -> dict[tuple[str, str], Any]:
    return {(r.metric, r.slice): r for r in compare(t, ref, TrackingPolicy())}


def test_class_share_distances_equal_scipy_on_the_raw_predictions() -> None:
    rng = np.random.default_rng(11)
    ref_pred = rng.choice(3, 6000, p=[0.5, 0.3, 0.2])
    pred = rng.choice(3, 3000, p=[0.4, 0.35, 0.25])
    rows = _by_metric(_profile(pred, rng.beta(5, 2, 3000)),
                      _profile(ref_pred, rng.beta(5, 2, 6000)))
    p = np.bincount(pred, minlength=3) / len(pred)
    q = np.bincount(ref_pred, minlength=3) / len(ref_pred)
    assert rows[("class_js", "")].value == pytest.approx(jensenshannon(p, q, base=2))
    assert rows[("class_linf", "")].value == pytest.approx(np.max(np.abs(p - q)))
    assert rows[("class_psi", "")].value == pytest.approx(
        stats.entropy(p, q) + stats.entropy(q, p))
    for i, c in enumerate(CLASSES):
        share = rows[("class_share", c)]
        assert share.value == pytest.approx(p[i]) and share.ci_low < p[i] < share.ci_high


def test_accuracy_macro_f1_and_recall_equal_scikit_learn() -> None:
    from sklearn.metrics import accuracy_score, f1_score, recall_score

    rng = np.random.default_rng(12)
    true = rng.choice(3, 1500, p=[0.6, 0.3, 0.1])
    pred = np.where(rng.random(1500) < 0.8, true, rng.integers(0, 3, 1500))
    scores = rng.beta(6, 2, 1500)
    rows = _by_metric(_profile(pred, scores, true), None)
    assert rows[("accuracy", "")].value == pytest.approx(accuracy_score(true, pred))
    f1 = rows[("macro_f1", "")]
    assert f1.value == pytest.approx(f1_score(true, pred, average="macro"))
    assert f1.ci_low < f1.value < f1.ci_high and f1.ci_high - f1.ci_low < 0.1
    recalls = recall_score(true, pred, average=None)
    for i, c in enumerate(CLASSES):
        r = rows[("recall", c)]
        assert r.value == pytest.approx(recalls[i]) and r.n == int((true == i).sum())
        assert r.ci_low < r.value < r.ci_high


def test_the_macro_f1_interval_covers_the_truth_and_narrows_with_more_labels() -> None:
    """Over repeated samples from one population the 95% interval holds the population's
    macro-F1 about 95% of the time; with 16x the labels it is about 4x narrower."""
    from sklearn.metrics import f1_score

    from tracking.statistics import macro_f1_interval

    rng = np.random.default_rng(13)
    true_all = rng.choice(3, 400_000, p=[0.5, 0.3, 0.2])
    pred_all = np.where(rng.random(400_000) < 0.75, true_all, rng.integers(0, 3, 400_000))
    truth = f1_score(true_all, pred_all, average="macro")
    def interval(size: int, resamples: int = 1000) -> tuple[float, float]:
        pick = rng.integers(0, 400_000, size)
        confusion = np.zeros((3, 3), np.int64)
        np.add.at(confusion, (true_all[pick], pred_all[pick]), 1)
        low, high = macro_f1_interval(confusion, resamples)
        assert low is not None and high is not None
        return low, high

    intervals = [interval(400, 400) for _ in range(100)]
    covered = sum(low <= truth <= high for low, high in intervals)
    low, high = interval(6400)
    assert 88 <= covered <= 100, covered
    assert 2.5 < (intervals[0][1] - intervals[0][0]) / (high - low) < 6


@pytest.mark.parametrize("n", [1, 5, 40])
def test_a_tiny_tranche_against_a_class_the_reference_never_predicted_is_judged(
        n: int) -> None:
    """The reference never predicted class c: a chi-square test cannot take a zero
    expected share, which once raised ZeroDivisionError (every rerun of the run failed)."""
    rng = np.random.default_rng(9)
    ref = _profile(np.repeat([0, 1], 500), rng.beta(5, 2, 1000))
    tiny = _profile(np.repeat([2], n), rng.beta(5, 2, n))
    rows = _rows(tiny, ref)
    assert all(status in ("ok", "alert", "insufficient") for _, status in rows.values())
    assert rows["class_psi"][1] == ("alert" if n == 40 else "insufficient"), rows


def test_holm_ranks_a_missing_p_value_last_instead_of_silencing_the_family() -> None:
    adjusted = holm([float("nan"), 1e-9, 1e-8])
    assert adjusted[0] == 1.0 and adjusted[1] < 1e-8 and adjusted[2] < 1e-7


def test_statistics_that_do_not_fit_a_profile_are_refused_before_anything_is_counted() -> None:
    """A batch whose arrays disagree (or name a class the model lacks) raises before it
    changes the profile: tracking skips it whole, never half."""
    good = _profile(np.array([0, 1, 1]), np.array([0.9, 0.8, 0.7]))
    before = (good.n, good.class_counts.copy(), good.score.n)
    n = 3
    bad = [BatchStats(predicted=np.array([0, 1, 1]), scores=np.ones(2), lengths=np.ones(n),
                      tokens=np.ones(n), oov=np.zeros(n), true=np.full(n, -1)),
           BatchStats(predicted=np.array([0, 1, 7]), scores=np.ones(n), lengths=np.ones(n),
                      tokens=np.ones(n), oov=np.zeros(n), true=np.full(n, -1))]
    for batch in bad:
        with pytest.raises(ValueError, match="do not fit the profile"):
            good.add(batch)
        assert (good.n, good.class_counts.tolist(), good.score.n) == \
            (before[0], before[1].tolist(), before[2])
