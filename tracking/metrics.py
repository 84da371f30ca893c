"""A tranche's metric rows: its profile against the model's reference, or the run's counts.

``compare`` is what the pipeline records for a tranche, ``launcher_rows`` what the
launcher adds once the pipeline is done; both compute every metric of the catalogue
(``tracking.catalogue``) of their stage. Rows carry the value, the sample size, an
interval where one applies, the threshold and the status (``tracking.policy``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from tracking.catalogue import LAUNCHER, PIPELINE, MetricRow, compute
from tracking.evidence import Evidence, Names
from tracking.policy import TrackingPolicy

if TYPE_CHECKING:
    from tracking.profile import Profile


def compare(t: Profile, ref: Profile | None, policy: TrackingPolicy,
            names: Names | None = None) -> list[MetricRow]:
    """Every figure of tranche profile ``t`` (against ``ref``, the model's reference, if
    it has one); ``names``: the feature names of column indices."""
    return compute(PIPELINE, Evidence.of_tranche(t, ref, policy, names))


def launcher_rows(counts: Mapping[str, int], dead_letters: Sequence[tuple[str, str, int]],
                  figures: Mapping[str, Any], policy: TrackingPolicy) -> list[MetricRow]:
    """The figures of a tranche only the launcher sees: from the run's record ``counts``
    of the tranche and its dead letters by (stage, reason); ``figures``: the reference's
    own (``Profile.reference``)."""
    return compute(LAUNCHER, Evidence(policy, figures=figures, counts=counts,
                                      dead_letters=dead_letters))
