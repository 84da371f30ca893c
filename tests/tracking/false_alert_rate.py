"""Measure tracking's false-alert rate on in-distribution hold-out tranches.

``python -m tests.tracking.false_alert_rate [RUNS] [TRANCHES_PER_RUN] [SIZE]`` scores
RUNS runs of TRANCHES_PER_RUN tranches of SIZE held-out documents (the generated corpus
of ``tests.tracking.corpus``) and prints: the share of tests with a raw p-value below
0.01, the share of runs where Holm's correction rejects any test (thresholds ignored:
the family-wise error rate of the tests alone), and the share of runs with any alert.
"""

from __future__ import annotations

import sys

from tests.tracking.corpus import tracked, tranche
from tracking.catalogue import PIPELINE, level
from tracking.metrics import compare_run
from tracking.policy import ALERT, INSUFFICIENT, TrackingPolicy
from tracking.statistics import holm


def main(runs: int, per_run: int, size: int) -> None:
    t, policy = tracked(), TrackingPolicy()
    raw = tested = rejected = alerted = 0
    for run in range(runs):
        profiles = {f"t{i}": tranche(t.model, size, seed=10_000 + run * per_run + i)
                    for i in range(per_run)}
        rows = compare_run(profiles, t.reference, policy)
        p = {(name, r.hypothesis): r.p_value for name, found in rows.items() for r in found
             if r.p_value is not None and r.status != INSUFFICIENT}
        raw += sum(v < 0.01 for v in p.values())
        tested += len(p)
        alpha = level(policy.significance, PIPELINE)
        rejected += any(a < alpha for a in holm(list(p.values())))
        alerted += any(r.status == ALERT for found in rows.values() for r in found)
    print(f"{runs} runs x {per_run} tranches x {size} docs: raw p < 0.01 in "
          f"{raw}/{tested} tests ({raw / max(1, tested):.2%}); Holm rejects any test in "
          f"{rejected}/{runs} runs; any alert in {alerted}/{runs} runs")


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:]] + [100, 3, 200][len(sys.argv) - 1:]
    main(*args[:3])
