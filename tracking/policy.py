"""When a tracked figure is an alert, and when alerts ask for retraining.

Every metric row has a status: ``insufficient`` when the sample is too small to judge
(its significance test could not reach significance at that size; a figure without a
test: fewer than ``min_records`` records), ``alert`` when it breaches its threshold and
its test rejects, the run's tests Holm-corrected to the family-wise level
``significance``, else ``ok``. A drift alert becomes a
retraining trigger only after the model version's last ``consecutive`` tranches (days,
each with its latest figures) breach it; an accuracy
breach triggers at once; no trigger follows another for the same model within
``cooldown_hours``. Which metric is drift or accuracy, and which key is its threshold,
is the catalogue's (``tracking.catalogue``); the keys are the fields below, the
``tracking.*`` configuration keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field

OK, ALERT, INSUFFICIENT = "ok", "alert", "insufficient"
IMPORTANCE_TOP = 50  # the reference's top features whose ranking is compared


@dataclass(frozen=True)
class TrackingPolicy:
    """The thresholds and limits above; each field is a ``tracking.*`` config key, with
    the range of values it takes (``pipelines.configuration.schema``)."""

    min_records: int = field(default=200, metadata={"min": 1,
        "help": "below this many records a figure without a significance test (importance "
                "ranking, estimated accuracy) is insufficient"})
    min_labelled: int = field(default=50, metadata={"min": 1,
        "help": "below this many labels macro-F1 and recall are marked insufficient"})
    accuracy_drop: float = field(default=0.02, metadata={"min": 0, "max": 1,
        "help": "alert when accuracy is significantly below the reference's minus this"})
    unknown_labels: float = field(default=0.01, metadata={"min": 0, "max": 1,
        "help": "alert when the share of labels outside the model's classes significantly "
                "exceeds this"})
    psi: float = field(default=0.2, metadata={"min": 0,
        "help": "alert at this population stability index of the class shares"})
    js_distance: float = field(default=0.1, metadata={"min": 0, "max": 1,
        "help": "alert at this Jensen-Shannon distance of the class shares"})
    linf: float = field(default=0.1, metadata={"min": 0, "max": 1,
        "help": "alert at this largest difference of a class share"})
    ks: float = field(default=0.1, metadata={"min": 0, "max": 1,
        "help": "alert at this Kolmogorov-Smirnov statistic of the scores"})
    wasserstein: float = field(default=0.05, metadata={"min": 0,
        "help": "alert at this Wasserstein distance of the scores"})
    length_ks: float = field(default=0.1, metadata={"min": 0, "max": 1,
        "help": "alert at this Kolmogorov-Smirnov statistic of text length and tokens"})
    oov_increase: float = field(default=0.05, metadata={"min": 0, "max": 1,
        "help": "alert when the out-of-vocabulary share exceeds the reference's by this"})
    empty_increase: float = field(default=0.05, metadata={"min": 0, "max": 1,
        "help": "alert when the share emptied by preprocessing exceeds the reference's by this"})
    importance_ndcg: float = field(default=0.8, metadata={"min": 0, "max": 1,
        "help": "alert below this nDCG@50 of the top features (reference importance as relevance)"})
    significance: float = field(default=0.01, metadata={"above": 0, "below": 1,
        "help": "the chance of any false alert in a run: a run's tests are Holm-corrected "
                "to this family-wise level"})
    min_expected: float = field(default=5.0, metadata={"min": 0,
        "help": "classes expected fewer times than this are merged for PSI and the chi-square "
                "test"})
    consecutive: int = field(default=2, metadata={"min": 1,
        "help": "tranches (days) in a row a drift alert must last to request retraining"})
    cooldown_hours: float = field(default=24.0, metadata={"min": 0,
        "help": "no new retraining request for the model within this time"})
