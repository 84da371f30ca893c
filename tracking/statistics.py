"""The statistics tracking computes, all from scipy and scikit-learn.

PSI as the symmetric relative entropy (``scipy.special.rel_entr``), Jensen-Shannon
distance, a chi-square test of class counts (classes expected too rarely merged),
Kolmogorov-Smirnov between sketches (the largest CDF difference over both sketches'
quantiles, its p-value from the asymptotic distribution for the effective sample size,
tested on D less the sketches' rank error so sketching never makes evidence), the
smallest p-value each test can give at a sample size, Holm's adjustment of a family,
Wasserstein distance between the sketches' quantile functions, a one-sided binomial test
of a share, a one-sided z-test of the calibrated accuracy estimate, Wilson intervals,
macro-F1 of a confusion matrix with a bootstrap interval,
nDCG and Kendall's tau of a ranking. scipy and scikit-learn are imported by the function
that needs them, so the metric catalogue can be imported without them (the report, the
launcher's start-up).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from tracking.sketch import Sketch

_GRID = np.linspace(0.0, 1.0, 201)
SCORE_BINS = np.linspace(0.0, 1.0, 21)


def wilson(k: int, n: int) -> tuple[float | None, float | None]:
    if n <= 0:
        return None, None
    from scipy import stats

    ci = stats.binomtest(int(k), int(n)).proportion_ci(0.95, method="wilson")
    return float(ci.low), float(ci.high)


def binomial_greater(k: int, n: int, p: float) -> float:
    """p-value of ``k`` successes in ``n`` against a share of at most ``p`` (one-sided)."""
    from scipy import stats

    return float(stats.binomtest(int(k), int(n), min(1.0, max(p, 1e-9)),
                                 alternative="greater").pvalue)


def chi_square(observed: np.ndarray, expected: np.ndarray) -> float:
    """p-value of a chi-square goodness-of-fit test (1.0 for a single category)."""
    from scipy import stats

    if len(observed) <= 1:
        return 1.0
    return float(stats.chisquare(observed, expected).pvalue)


def _f1_of(tp: np.ndarray, by_true: np.ndarray, by_pred: np.ndarray) -> np.ndarray:
    """Macro-F1 over the last axis, averaged over the classes present in the labels or
    the predictions (``by_true + by_pred > 0``), as scikit-learn's ``f1_score(average=
    "macro")`` of the same records."""
    denominator = by_true + by_pred
    present = denominator > 0
    f1 = np.divide(2 * tp, denominator, out=np.zeros_like(tp, dtype=float), where=present)
    count = present.sum(axis=-1)
    return np.divide(f1.sum(axis=-1), count, out=np.zeros(count.shape), where=count > 0)


def macro_f1(confusion: np.ndarray) -> float:
    """Macro-F1 of the records a confusion matrix (true x predicted) counts, over the
    classes present in their labels or predictions: scikit-learn's ``f1_score(true, pred,
    average="macro")`` of those records."""
    c = np.asarray(confusion, dtype=float)
    return float(_f1_of(np.diag(c), c.sum(axis=1), c.sum(axis=0)))


def macro_f1_interval(confusion: np.ndarray, resamples: int = 1000, seed: int = 0
                      ) -> tuple[float | None, float | None]:
    """A 95% percentile-bootstrap interval of ``macro_f1``: the labelled records
    resampled as a multinomial over the confusion matrix's non-empty cells, the same
    statistic computed on each resample (the classes present in that resample). It needs
    the counts only, never the rows, and memory in the resamples times the non-empty
    cells. The interval holds the estimate (a percentile interval of a skewed statistic
    on few records can miss it by a hair; it is widened to it). Deterministic."""
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
    low, high = np.percentile(_f1_of(tp, by_true, by_pred), [2.5, 97.5])
    estimate = macro_f1(confusion)
    return float(min(low, estimate)), float(max(high, estimate))


def calibrated_accuracy(bins: np.ndarray, labelled: np.ndarray, correct: np.ndarray,
                        prior: float = 5.0) -> float | None:
    """Accuracy expected of records whose score bins count ``bins``, from a held-out
    labelled set's ``labelled`` and ``correct`` records per bin (histogram-binning
    calibration; each bin's accuracy shrunk towards the overall one by ``prior``
    pseudo-records, so a sparse bin borrows from the rest)."""
    total = int(np.sum(bins))
    if not total or not np.sum(labelled):
        return None
    overall = float(np.sum(correct) / np.sum(labelled))
    per_bin = (np.asarray(correct, float) + prior * overall) / (np.asarray(labelled) + prior)
    return float(np.dot(bins, per_bin) / total)


def calibrated_accuracy_test(bins: np.ndarray, labelled: np.ndarray, correct: np.ndarray,
                             limit: float, reference_labels: int, reference_accuracy: float,
                             prior: float = 5.0) -> tuple[float, float]:
    """One-sided z-test that the accuracy expected of records whose score bins count
    ``bins`` (``calibrated_accuracy``: the mean of each record's calibrated confidence)
    is below ``limit``: (p-value, the smallest p-value it could give). Its variance is
    the variance of that mean over the records, plus the calibration's own (each bin's
    accuracy from its held-out labels) and that of the reference accuracy the limit
    comes from (``reference_labels`` labels)."""
    from scipy import stats

    bins = np.asarray(bins, float)
    n = float(bins.sum())
    overall = float(np.sum(correct) / max(1, np.sum(labelled)))
    known = np.asarray(labelled, float) + prior
    per_bin = (np.asarray(correct, float) + prior * overall) / known
    calibration = per_bin * (1.0 - per_bin) / known  # variance of each bin's accuracy
    reference = reference_accuracy * (1.0 - reference_accuracy) / max(1, reference_labels)
    mean = float(np.dot(bins, per_bin) / n)
    spread = float(np.dot(bins, (per_bin - mean) ** 2) / n)  # of the records' confidences
    se = np.sqrt(spread / n + float(np.dot((bins / n) ** 2, calibration)) + reference)
    # The estimate is at least the lowest bin's accuracy and its standard error at
    # least the reference's, so no tranche can give a smaller p-value than this.
    lowest = float(per_bin.min())
    with np.errstate(divide="ignore", invalid="ignore"):  # no variance: p is 0 or 1
        floor = 0.5 if lowest >= limit else float(
            stats.norm.cdf(np.float64(lowest - limit) / np.sqrt(reference)))
        return float(stats.norm.cdf(np.float64(mean - limit) / se)), floor


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values (monotone, at most 1): rejecting where the
    adjusted value is below ``alpha`` keeps the chance of any false rejection in the
    family at most ``alpha``."""
    p_values = [1.0 if p != p else p for p in p_values]  # NaN: no evidence, ranked last
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted, running = [1.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def chi_square_floor(expected: np.ndarray, n: int) -> float:
    """The smallest p-value the chi-square test of ``n`` counts against ``expected``
    shares can give: every record in the least expected category."""
    from scipy import stats

    if len(expected) <= 1 or n <= 0:
        return 1.0
    q = float(np.min(expected))
    if q <= 0:  # a category expected never: one record there is evidence enough
        return 0.0
    return float(stats.chi2.sf(n * (1 - q) / q, len(expected) - 1))


def ks_floor(n_a: int, n_b: int) -> float:
    """The smallest p-value ``ks_between`` can give for these sample sizes (D = 1)."""
    from scipy import stats

    if not n_a or not n_b:
        return 1.0
    return float(stats.kstwobign.sf(np.sqrt(n_a * n_b / (n_a + n_b))))


def binomial_floor(n: int, p: float, greater: bool = True) -> float:
    """The smallest p-value of a one-sided binomial test of ``n`` trials against share
    ``p``: every trial a success (``greater``) or none."""
    p = min(1.0, max(p, 1e-9))
    return float((p if greater else 1.0 - p) ** max(0, n))


def binomial_less(k: int, n: int, p: float) -> float:
    """p-value of ``k`` successes in ``n`` against a share of at least ``p`` (one-sided)."""
    from scipy import stats

    return float(stats.binomtest(int(k), int(n), min(1.0, max(p, 1e-9)),
                                 alternative="less").pvalue)


def share_test(counts: np.ndarray, reference: np.ndarray, reference_n: int,
               min_expected: float) -> tuple[float, float]:
    """(p-value, floor) of the hypothesis that a tranche's class ``counts`` follow the
    ``reference`` shares (of ``reference_n`` records); the floor is the smallest p-value
    the test can give at the tranche's size.

    A class the reference never has is expected as half a record of it would be
    (``0.5 / reference_n``), not never. Classes expected at least ``min_expected`` times
    are each a category of a chi-square goodness-of-fit test; the rarely expected ones
    are pooled among themselves only (pooling them with a common class would let a
    shift from that class to a rare or new one cancel out). A pool expected that often
    too is one more category; one expected less is tested on its own, exactly: a
    one-sided binomial test of its count (more records there than expected is drift;
    fewer cannot be told from chance), the chi-square then over the common classes
    alone, and the two p-values combined by Bonferroni (twice the smaller). When every
    class is expected rarely (a small tranche) there is no test: (1.0, 1.0)."""
    from scipy import stats

    counts = np.asarray(counts, float)
    n = float(counts.sum())
    q = np.where(reference > 0, reference, 0.5 / max(1, reference_n))
    q = q / q.sum()
    small = q * n < min_expected
    if n <= 0 or small.all():
        return 1.0, 1.0
    if not small.any():
        return chi_square(counts, q * n), chi_square_floor(q, int(n))
    pool_q, pool_k = float(q[small].sum()), float(counts[small].sum())
    common_q, common_k = q[~small], counts[~small]
    if pool_q * n >= min_expected:
        expected = np.append(common_q, pool_q)
        return (chi_square(np.append(common_k, pool_k), expected * n),
                chi_square_floor(expected, int(n)))
    p_pool = float(stats.binom.sf(pool_k - 1, int(n), pool_q))
    floor_pool = binomial_floor(int(n), pool_q)
    common_share = common_q / common_q.sum()
    if len(common_q) > 1 and common_k.sum() > 0:
        p_common = chi_square(common_k, common_share * common_k.sum())
        floor_common = chi_square_floor(common_share, int(n))
    else:
        p_common = floor_common = 1.0
    return (min(1.0, 2 * min(p_pool, p_common)), min(1.0, 2 * min(floor_pool, floor_common)))


def psi(observed: np.ndarray, expected: np.ndarray, eps: float = 1e-6) -> float:
    from scipy.special import rel_entr

    p, q = np.clip(observed, eps, None), np.clip(expected, eps, None)
    return float(np.sum(rel_entr(p, q) + rel_entr(q, p)))


def jensen_shannon(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon distance in bits (0 = equal, 1 = disjoint)."""
    from scipy.spatial.distance import jensenshannon

    return float(jensenshannon(p, q, base=2))


def ks_between(a: Sketch, b: Sketch) -> tuple[float, float]:
    """(D, p-value) of a two-sample Kolmogorov-Smirnov test on two sketches."""
    from scipy import stats

    points = np.unique(np.concatenate([a.quantiles(_GRID), b.quantiles(_GRID)]))
    d = float(np.max(np.abs(a.cdf(points) - b.cdf(points))))
    n_eff = a.n * b.n / (a.n + b.n)
    slack = sum(s.rank_error for s in (a, b) if not s.exact)  # a sketch's CDF error
    return d, float(stats.kstwobign.sf(max(0.0, d - slack) * np.sqrt(n_eff)))


def wasserstein_between(a: Sketch, b: Sketch) -> float:
    from scipy import stats

    mid = (_GRID[1:] + _GRID[:-1]) / 2
    return float(stats.wasserstein_distance(a.quantiles(mid), b.quantiles(mid)))


def histogram(s: Sketch, bins: np.ndarray = SCORE_BINS) -> np.ndarray:
    cdf = s.cdf(bins)
    cdf[-1] = 1.0 if s.n else 0.0
    return np.diff(np.concatenate([[0.0], cdf[1:]]))


def ndcg(relevance: list[float], scores: list[float], k: int) -> float:
    """scikit-learn's nDCG@k of ranking by ``scores`` items of graded ``relevance``."""
    from sklearn.metrics import ndcg_score

    return float(ndcg_score(np.asarray([relevance]), np.asarray([scores]), k=k))


def kendall_tau(a: list[float], b: list[float]) -> float:
    from scipy import stats

    return float(stats.kendalltau(a, b).statistic)
