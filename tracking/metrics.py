"""Compare a tranche's profile with the model's reference: every figure a metric row.

All statistics come from scipy and scikit-learn: PSI as the symmetric relative
entropy (``scipy.special.rel_entr``), Jensen-Shannon distance, a chi-square test of
the class counts, Kolmogorov-Smirnov between sketches (the largest CDF difference over
both sketches' quantiles, its p-value from the asymptotic distribution for the
effective sample size), Wasserstein distance between the sketches' quantile functions,
binomial tests for token shares, Wilson intervals for accuracy, recall and shares, a
bootstrap interval over the confusion matrix for macro-F1, nDCG and Kendall's tau for
the importance ranking. Rows carry the value, the sample size, an interval where one
applies, the threshold and the status (``tracking.policy``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import stats
from scipy.spatial.distance import jensenshannon
from scipy.special import rel_entr

from tracking.policy import ALERT, IMPORTANCE_TOP, INSUFFICIENT, OK, TrackingPolicy
from tracking.profile import Profile
from tracking.sketch import Sketch

_GRID = np.linspace(0.0, 1.0, 201)
SCORE_BINS = np.linspace(0.0, 1.0, 21)


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


def wilson(k: int, n: int) -> tuple[float | None, float | None]:
    if n <= 0:
        return None, None
    ci = stats.binomtest(int(k), int(n)).proportion_ci(0.95, method="wilson")
    return float(ci.low), float(ci.high)


def macro_f1(confusion: np.ndarray) -> float:
    """scikit-learn's macro-F1 of the records a confusion matrix (true x predicted) counts,
    every class included."""
    from sklearn.metrics import f1_score

    k = confusion.shape[0]
    true = np.repeat(np.repeat(np.arange(k), k), confusion.ravel())
    pred = np.repeat(np.tile(np.arange(k), k), confusion.ravel())
    return float(f1_score(true, pred, labels=list(range(k)), average="macro",
                          zero_division=0))


def macro_f1_interval(confusion: np.ndarray, resamples: int = 1000, seed: int = 0
                      ) -> tuple[float | None, float | None]:
    """A 95% percentile-bootstrap interval of macro-F1: the labelled records resampled
    as a multinomial over the confusion matrix's non-empty cells (F1 has no closed-form
    interval; this needs the counts only, never the rows, and memory in the resamples
    times the non-empty cells, not the classes squared). Deterministic for a matrix."""
    n = int(confusion.sum())
    if n <= 0:
        return None, None
    k = confusion.shape[0]
    cells = np.flatnonzero(confusion.ravel())
    true, pred = np.divmod(cells, k)
    draws = np.random.default_rng(seed).multinomial(
        n, confusion.ravel()[cells] / n, size=resamples).astype(float)
    tp = np.zeros((resamples, k))
    np.add.at(tp.T, true[true == pred], draws[:, true == pred].T)
    by_true, by_pred = np.zeros((resamples, k)), np.zeros((resamples, k))
    np.add.at(by_true.T, true, draws.T)  # tp + fn, per class
    np.add.at(by_pred.T, pred, draws.T)  # tp + fp, per class
    denominator = by_true + by_pred
    f1 = np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)
    low, high = np.percentile(f1.mean(axis=1), [2.5, 97.5])
    return float(low), float(high)


def merged_shares(counts: np.ndarray, reference: np.ndarray, n: int, min_expected: float
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Observed counts and expected shares with the classes expected fewer than
    ``min_expected`` times in ``n`` merged into one."""
    small = reference * n < min_expected
    if not small.any() or small.all():
        return counts.astype(float), reference
    if reference[small].sum() * n < min_expected:  # still small: join the next smallest
        small[int(np.argmin(np.where(small, np.inf, reference)))] = True
    keep = ~small
    if not keep.any():
        return np.array([counts.sum()], float), np.array([1.0])
    return (np.append(counts[keep], counts[small].sum()).astype(float),
            np.append(reference[keep], reference[small].sum()))


def psi(observed: np.ndarray, expected: np.ndarray, eps: float = 1e-6) -> float:
    p, q = np.clip(observed, eps, None), np.clip(expected, eps, None)
    return float(np.sum(rel_entr(p, q) + rel_entr(q, p)))


def ks_between(a: Sketch, b: Sketch) -> tuple[float, float]:
    """(D, p-value) of a two-sample Kolmogorov-Smirnov test on two sketches."""
    points = np.unique(np.concatenate([a.quantiles(_GRID), b.quantiles(_GRID)]))
    d = float(np.max(np.abs(a.cdf(points) - b.cdf(points))))
    n_eff = a.n * b.n / (a.n + b.n)
    return d, float(stats.kstwobign.sf(d * np.sqrt(n_eff)))


def wasserstein_between(a: Sketch, b: Sketch) -> float:
    mid = (_GRID[1:] + _GRID[:-1]) / 2
    return float(stats.wasserstein_distance(a.quantiles(mid), b.quantiles(mid)))


def histogram(s: Sketch, bins: np.ndarray = SCORE_BINS) -> np.ndarray:
    cdf = s.cdf(bins)
    cdf[-1] = 1.0 if s.n else 0.0
    return np.diff(np.concatenate([[0.0], cdf[1:]]))


def compare(t: Profile, ref: Profile | None, policy: TrackingPolicy,
            names: Callable[[list[int]], list[str]] | None = None) -> list[MetricRow]:
    rows = _class_rows(t, ref, policy) + _score_rows(t, ref, policy)
    rows += _input_rows(t, ref, policy) + _accuracy_rows(t, ref, policy)
    rows += _importance_rows(t, ref, policy, names)
    return rows


def _judged(n: int, policy: TrackingPolicy, breach: bool) -> str:
    return INSUFFICIENT if n < policy.min_records else (ALERT if breach else OK)


def _class_rows(t: Profile, ref: Profile | None, policy: TrackingPolicy) -> list[MetricRow]:
    rows = []
    for i, c in enumerate(t.classes):
        low, high = wilson(int(t.class_counts[i]), t.n)
        rows.append(MetricRow("class_share", c, float(t.class_counts[i] / max(1, t.n)), t.n,
                              low, high))
    if ref is None or not ref.n or not t.n:
        return rows
    q = ref.class_counts / ref.n
    rows += [MetricRow("class_share_reference", c, float(q[i]), ref.n)
             for i, c in enumerate(ref.classes)]
    observed, expected = merged_shares(t.class_counts, q, t.n, policy.min_expected)
    p = observed / t.n
    significant = stats.chisquare(observed, expected * t.n).pvalue < policy.significance \
        if len(observed) > 1 else False
    for metric, value, threshold in (
            ("class_psi", psi(p, expected), policy.psi),
            ("class_js", float(jensenshannon(p, expected, base=2)), policy.js_distance),
            ("class_linf", float(np.max(np.abs(t.class_counts / t.n - q))), policy.linf)):
        rows.append(MetricRow(metric, "", value, t.n, threshold=threshold,
                              status=_judged(t.n, policy, value >= threshold and significant)))
    return rows


def _score_rows(t: Profile, ref: Profile | None, policy: TrackingPolicy) -> list[MetricRow]:
    rows = [MetricRow("score_histogram", f"{lo:.2f}-{hi:.2f}", float(v), t.n)
            for lo, hi, v in zip(SCORE_BINS[:-1], SCORE_BINS[1:], histogram(t.score))]
    if ref is None or not ref.score.n or not t.score.n:
        return rows
    rows += [MetricRow("score_histogram_reference", f"{lo:.2f}-{hi:.2f}", float(v), ref.n)
             for lo, hi, v in zip(SCORE_BINS[:-1], SCORE_BINS[1:], histogram(ref.score))]
    d, p_value = ks_between(t.score, ref.score)
    rows.append(MetricRow("score_ks", "", d, t.n, threshold=policy.ks, status=_judged(
        t.n, policy, d >= policy.ks and p_value < policy.significance)))
    w = wasserstein_between(t.score, ref.score)
    rows.append(MetricRow("score_wasserstein", "", w, t.n, threshold=policy.wasserstein,
                          status=_judged(t.n, policy, w >= policy.wasserstein
                                         and p_value < policy.significance)))
    return rows


def _input_rows(t: Profile, ref: Profile | None, policy: TrackingPolicy) -> list[MetricRow]:
    rows = [MetricRow("oov_share", "", t.oov_share, t.n)]
    if ref is None or not ref.n or not t.n:
        return rows
    for metric, a, b, threshold in (("length_ks", t.length, ref.length, policy.length_ks),
                                    ("tokens_ks", t.tokens, ref.tokens, policy.length_ks)):
        d, p_value = ks_between(a, b)
        rows.append(MetricRow(metric, "", d, t.n, threshold=threshold, status=_judged(
            t.n, policy, d >= threshold and p_value < policy.significance)))
    limit = ref.oov_share + policy.oov_increase
    significant = t.tokens_total > 0 and stats.binomtest(
        t.oov_total, t.tokens_total, min(1.0, max(ref.oov_share, 1e-9)),
        alternative="greater").pvalue < policy.significance
    rows[0] = MetricRow("oov_share", "", t.oov_share, t.n, threshold=limit,
                        status=_judged(t.n, policy, t.oov_share > limit and significant))
    return rows


def _accuracy_rows(t: Profile, ref: Profile | None, policy: TrackingPolicy) -> list[MetricRow]:
    rows = [MetricRow("accuracy_estimated", "", t.top_probability_sum / max(1, t.n), t.n)]
    n = t.labelled
    status = OK if n >= policy.min_labelled else INSUFFICIENT
    if n == 0:
        return rows + [MetricRow("accuracy", "", float("nan"), 0, status=INSUFFICIENT)]
    correct = int(np.trace(t.confusion))
    low, high = wilson(correct, n)
    reference = (ref.reference.get("accuracy") if ref is not None else None)
    threshold = None if reference is None else float(reference) - policy.accuracy_drop
    breach = threshold is not None and high is not None and high < threshold
    rows.append(MetricRow("accuracy", "", correct / n, n, low, high, threshold,
                          ALERT if status == OK and breach else status))
    f1 = macro_f1(t.confusion)
    low, high = macro_f1_interval(t.confusion)
    rows.append(MetricRow("macro_f1", "", f1, n, low, high, status=status))
    for i, c in enumerate(t.classes):
        support = int(t.confusion[i].sum())
        if support:
            low, high = wilson(int(t.confusion[i, i]), support)
            rows.append(MetricRow("recall", c, float(t.confusion[i, i] / support), support,
                                  low, high, status=status))
    return rows


def _importance_rows(t: Profile, ref: Profile | None, policy: TrackingPolicy,
                     names: Callable[[list[int]], list[str]] | None) -> list[MetricRow]:
    """nDCG@50 of the tranche's top features with the reference's importance as relevance
    (1 = the tranche ranks first what matters most in the reference), Kendall's tau over
    the reference's top 50, and the features whose importance moved most. Permutation
    importance is measured on the reference's top 50 only, so only those are compared."""
    from sklearn.metrics import ndcg_score

    mine = t.importance()
    top_ref = (ref.reference.get("importance_top") if ref is not None else None) or []
    if ref is not None and ref.reference.get("importance_kind") == "permutation":
        top_ref = top_ref[:IMPORTANCE_TOP]
    if mine is None or not top_ref:
        return []
    ref_value = {int(i): float(v) for i, _, v in top_ref}
    ref_name = {int(i): str(name) for i, name, _ in top_ref}
    columns = sorted(set(ref_value) if len(top_ref) <= IMPORTANCE_TOP else
                     set(np.argsort(-mine, kind="stable")[:200].tolist()) | set(ref_value))
    relevance = np.asarray([[ref_value.get(i, 0.0) for i in columns]])
    ndcg = float(ndcg_score(relevance, np.asarray([[float(mine[i]) for i in columns]]),
                            k=IMPORTANCE_TOP))
    top50 = [int(i) for i, _, _ in top_ref[:IMPORTANCE_TOP]]
    tau = float(stats.kendalltau([ref_value[i] for i in top50],
                                 [float(mine[i]) for i in top50]).statistic)
    n = t.importance_rows  # all scored records, or those permuted
    rows = [MetricRow("importance_ndcg", "", ndcg, n, threshold=policy.importance_ndcg,
                      status=_judged(n, policy, ndcg < policy.importance_ndcg)),
            MetricRow("importance_tau", "", tau, n)]
    moved = sorted(columns, key=lambda i: -abs(float(mine[i]) - ref_value.get(i, 0.0)))[:10]
    labels = dict(zip(moved, names(moved))) if names else {}
    for i in moved:
        label = ref_name.get(i) or labels.get(i) or str(i)
        rows.append(MetricRow("importance_change", label,
                              float(mine[i]) - ref_value.get(i, 0.0), n,
                              threshold=ref_value.get(i, 0.0)))
    return rows
