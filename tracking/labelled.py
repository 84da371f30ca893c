"""The figures of records that carry a true label, computed from a tranche's
``Evidence``: the labels counted (those outside the model's classes included, as
errors), correct predictions, the accuracy test against the reference, the share of
labels the model does not know, the confusion matrix with those labels as one more
class, and the label-free accuracy estimate calibrated on the reference's held-out
labels, with its test. The catalogue (``tracking.catalogue``) turns them into rows."""

from __future__ import annotations

import numpy as np

from tracking import statistics
from tracking.evidence import Evidence
from tracking.policy import INSUFFICIENT, OK

# A test's p-value and the smallest p-value it could give at its sample size.
Tested = tuple[float, float]


def labels(e: Evidence) -> int:
    return e.t.labels


def labelled_status(e: Evidence) -> str:
    return OK if e.t.labels >= e.policy.min_labelled else INSUFFICIENT


def accuracy_estimated(e: Evidence) -> float | None:
    """The tranche's records per score bin times the reference's accuracy in that bin
    (histogram-binning calibration on the reference's held-out labels)."""
    if not e.compared or not e.ref.labelled:
        return None
    return statistics.calibrated_accuracy(e.t.score_bins, e.ref.bin_labelled,
                                          e.ref.bin_correct)


def accuracy_estimated_test(e: Evidence) -> Tested:
    """One-sided z-test of the estimate against the reference's accuracy less
    ``tracking.accuracy_drop`` (``statistics.calibrated_accuracy_test``); it cannot
    reach significance below ``tracking.min_records`` records, where the mean's normal
    approximation is not trusted."""
    if e.t.n < e.policy.min_records:
        return 1.0, 1.0
    reference = float(e.figures["accuracy"])
    return statistics.calibrated_accuracy_test(
        e.t.score_bins, e.ref.bin_labelled, e.ref.bin_correct,
        reference - e.policy.accuracy_drop, e.ref.labelled, reference)


def accuracy_reference(e: Evidence) -> float | None:
    reference = e.figures.get("accuracy")
    return None if reference is None else float(reference)


def correct(e: Evidence) -> int:
    return int(np.trace(e.t.confusion))


def accuracy_test(e: Evidence) -> Tested:
    limit = float(e.figures["accuracy"]) - e.policy.accuracy_drop
    return (statistics.binomial_less(correct(e), e.t.labels, limit),
            statistics.binomial_floor(e.t.labels, limit, greater=False))


def unknown_label_share(e: Evidence) -> float | None:
    return int(e.t.unknown_labels.sum()) / e.t.labels if e.t.labels else None


def unknown_label_test(e: Evidence) -> Tested:
    share = e.policy.unknown_labels
    return (statistics.binomial_greater(int(e.t.unknown_labels.sum()), e.t.labels, share),
            statistics.binomial_floor(e.t.labels, share))


def confusion(e: Evidence) -> np.ndarray:
    """The confusion matrix with the labels outside the model's classes as one more
    (never predicted) class."""
    k, t = len(e.t.classes), e.t
    out = np.zeros((k + 1, k + 1), np.int64)
    out[:k, :k], out[k, :k] = t.confusion, t.unknown_labels
    return out
