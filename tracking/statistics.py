"""The statistics tracking computes, all from scipy and scikit-learn.

PSI as the symmetric relative entropy (``scipy.special.rel_entr``), Jensen-Shannon
distance, a chi-square test of class counts (classes expected too rarely merged),
Kolmogorov-Smirnov between sketches (the largest CDF difference over both sketches'
quantiles, its p-value from the asymptotic distribution for the effective sample size),
Wasserstein distance between the sketches' quantile functions, a one-sided binomial test
of a share, Wilson intervals, macro-F1 of a confusion matrix with a bootstrap interval,
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
    return d, float(stats.kstwobign.sf(d * np.sqrt(n_eff)))


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
