"""A run's metric rows: each tranche's profile against the model's reference, or the
run's counts; the run's tests corrected as one family.

``compare_run`` is what the pipeline records for a run's tranches, ``launcher_run_rows``
what the launcher adds once the pipeline is done; both compute every metric of the
catalogue (``tracking.catalogue``) of their stage for every tranche, then correct the
family of the stage's tests over all the run's tranches with Holm's method at the
stage's level (``tracking.catalogue.level``; the two levels add up to
``tracking.significance``), so the chance that a run raises any false alert is at most
``tracking.significance`` however many tranches and metrics it has. Rows carry the
value, the sample size, an interval where one applies, the threshold and the status
(``tracking.policy``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from tracking.catalogue import LAUNCHER, PIPELINE, MetricRow, compute, level
from tracking.evidence import Evidence, Names
from tracking.policy import ALERT, OK, TrackingPolicy
from tracking.statistics import holm

if TYPE_CHECKING:
    from tracking.profile import Profile

Rows = dict[str, list[MetricRow]]  # by tranche


def compare_run(tranches: Mapping[str, Profile], ref: Profile | None, policy: TrackingPolicy,
                names: Names | None = None) -> Rows:
    """Every figure of each tranche profile (against ``ref``, the model's reference, if it
    has one), the run's tests Holm-corrected; ``names``: feature names of columns."""
    rows = {t: compute(PIPELINE, Evidence.of_tranche(p, ref, policy, names))
            for t, p in tranches.items()}
    return corrected(rows, level(policy.significance, PIPELINE))


def compare(t: Profile, ref: Profile | None, policy: TrackingPolicy,
            names: Names | None = None) -> list[MetricRow]:
    """The figures of a run of the one tranche ``t``."""
    return compare_run({"": t}, ref, policy, names)[""]


def launcher_run_rows(tranches: Mapping[str, tuple[Mapping[str, int],
                                                   Sequence[tuple[str, str, int]]]],
                      figures: Mapping[str, Any], policy: TrackingPolicy) -> Rows:
    """The figures only the launcher sees, for each tranche: from the run's record
    counts of the tranche and its dead letters by (stage, reason); ``figures``: the
    reference's own (``Profile.reference``)."""
    rows = {t: compute(LAUNCHER, Evidence(policy, figures=figures, counts=counts,
                                          dead_letters=dead))
            for t, (counts, dead) in tranches.items()}
    return corrected(rows, level(policy.significance, LAUNCHER))


def launcher_rows(counts: Mapping[str, int], dead_letters: Sequence[tuple[str, str, int]],
                  figures: Mapping[str, Any], policy: TrackingPolicy) -> list[MetricRow]:
    """The launcher's figures of a run of one tranche."""
    return launcher_run_rows({"": (counts, dead_letters)}, figures, policy)[""]


def corrected(rows: Rows, alpha: float) -> Rows:
    """The rows with an alert kept only where its test's Holm-adjusted p-value, over
    every distinct (tranche, test) of the family that could reach significance, is
    below ``alpha``."""
    tested = {(t, r.hypothesis): float(r.p_value) for t, found in rows.items()
              for r in found if r.p_value is not None and r.status in (OK, ALERT)}
    adjusted = dict(zip(tested, holm(list(tested.values()))))
    return {t: [replace(r, status=OK) if r.status == ALERT and r.p_value is not None
                and adjusted[(t, r.hypothesis)] >= alpha else r for r in found]
            for t, found in rows.items()}
