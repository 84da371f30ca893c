"""Done-when tests of tracking you can trust at 3 a.m.: in-distribution hold-out tranches
of 200 and 2,000 documents from a corpus with realistic class imbalance raise no alert,
whether each is its own run or all are one run; a 100-document tranche with a strong
prior shift alerts; the label-free accuracy estimate is calibrated."""

from __future__ import annotations

import numpy as np
import pytest

from tests.tracking.corpus import CLASSES, PRIORS, tracked, tranche
from tracking.metrics import compare, compare_run
from tracking.policy import ALERT, INSUFFICIENT, TrackingPolicy

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("size", [200, 2000])
def test_in_distribution_tranches_raise_no_alert(size: int) -> None:
    t = tracked()
    tranches = {f"2026-01-{i + 1:02d}": tranche(t.model, size, seed=100 + i + size)
                for i in range(20)}
    policy = TrackingPolicy()
    for name, profile in tranches.items():  # 20 runs of one tranche
        alerts = {r.metric for r in compare(profile, t.reference, policy)
                  if r.status == ALERT}
        assert alerts == set(), (name, alerts)
    together = compare_run(tranches, t.reference, policy)  # one run of 20 tranches
    assert not [(n, r.metric) for n, rows in together.items() for r in rows
                if r.status == ALERT]


def test_a_strong_prior_shift_alerts_in_a_100_document_tranche() -> None:
    t = tracked()
    three = np.zeros(len(CLASSES))
    three[[5, 9, 14]] = 1 / 3  # 3 sections only, each about 3% of the reference
    shifted = tranche(t.model, 100, seed=7, priors=three, labelled=False)
    rows = {r.metric: r for r in compare(shifted, t.reference, TrackingPolicy())
            if r.slice == ""}
    assert rows["class_psi"].status == ALERT and rows["class_psi"].value > 1
    assert rows["class_psi"].p_value is not None and rows["class_psi"].p_value < 1e-20


def test_an_in_distribution_100_document_tranche_is_judged_and_quiet() -> None:
    t = tracked()
    rows = compare(tranche(t.model, 100, seed=8), t.reference, TrackingPolicy())
    assert not [r.metric for r in rows if r.status == ALERT]
    assert {r.metric: r.status for r in rows if r.slice == ""}["class_psi"] != INSUFFICIENT


def test_the_label_free_accuracy_estimate_is_calibrated_within_two_points() -> None:
    """Averaged over in-distribution tranches of 2,000, the estimate (scores calibrated
    on the reference's held-out labels) is within 2 points of measured accuracy, where
    the raw mean top probability is not."""
    t = tracked()
    found = []
    for seed in range(300, 305):
        p = tranche(t.model, 2000, seed)
        [row] = [r for r in compare(p, t.reference, TrackingPolicy())
                 if r.metric == "accuracy_estimated"]
        found.append((row.value, np.trace(p.confusion) / p.labelled,
                      p.top_probability_sum / p.n))
    estimate, measured, raw = np.mean(found, axis=0)
    assert abs(estimate - measured) < 0.02, (estimate, measured)
    assert abs(raw - measured) > abs(estimate - measured)


def test_priors_are_realistically_imbalanced() -> None:
    assert PRIORS.max() > 0.25 and PRIORS.min() < 0.015
