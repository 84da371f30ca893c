"""When a tracked figure is an alert, and when alerts ask for retraining.

Every metric row has a status: ``insufficient`` when the sample is too small to judge
(fewer than ``min_records`` scored records, or ``min_labelled`` labels for accuracy),
``alert`` when it breaches its threshold (and, for drift, is also significant at
``significance`` for the sample sizes involved), else ``ok``. A drift alert becomes a
retraining trigger only after ``consecutive`` runs in a row breach it; an accuracy
breach triggers at once; no trigger follows another for the same model within
``cooldown_hours``. Which metric is drift or accuracy, and which key is its threshold,
is the catalogue's (``tracking.catalogue``); the keys are the fields below, the
``tracking.*`` configuration keys.
"""

from __future__ import annotations

from dataclasses import dataclass

OK, ALERT, INSUFFICIENT = "ok", "alert", "insufficient"
IMPORTANCE_TOP = 50  # the reference's top features whose ranking is compared


@dataclass(frozen=True)
class TrackingPolicy:
    min_records: int = 200
    min_labelled: int = 50
    accuracy_drop: float = 0.02
    psi: float = 0.2
    js_distance: float = 0.1
    linf: float = 0.1
    ks: float = 0.1
    wasserstein: float = 0.05
    length_ks: float = 0.1
    oov_increase: float = 0.05
    empty_increase: float = 0.05
    importance_ndcg: float = 0.8
    significance: float = 0.01
    min_expected: float = 5.0  # classes expected less often are merged for PSI and chi2
    consecutive: int = 2
    cooldown_hours: float = 24.0
