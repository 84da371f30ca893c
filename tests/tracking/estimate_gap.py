"""Print the label-free accuracy estimate's gap to measured accuracy, tranche by tranche.

``python -m tests.tracking.estimate_gap [TRANCHES] [SIZE]`` scores TRANCHES
in-distribution held-out tranches of SIZE documents (the generated corpus of
``tests.tracking.corpus``; defaults 20 and 2,000) and prints, for each, the accuracy
measured on its labels, the estimate from its scores alone (``accuracy_estimated``) and
their gap, then the largest and the mean absolute gap.
"""

from __future__ import annotations

import sys

import numpy as np

from tests.tracking.corpus import tracked, tranche
from tracking.metrics import compare
from tracking.policy import TrackingPolicy


def main(tranches: int, size: int) -> None:
    t, gaps = tracked(), []
    print(f"{'tranche':>7} {'measured':>9} {'estimated':>9} {'gap':>7}")
    for i in range(tranches):
        p = tranche(t.model, size, seed=300 + i)
        [row] = [r for r in compare(p, t.reference, TrackingPolicy())
                 if r.metric == "accuracy_estimated"]
        measured = float(np.trace(p.confusion) / p.labelled)
        gaps.append(row.value - measured)
        print(f"{i:>7} {measured:>9.4f} {row.value:>9.4f} {gaps[-1]:>+7.4f}")
    print(f"{tranches} tranches x {size} docs: max |gap| {np.max(np.abs(gaps)):.4f}, "
          f"mean |gap| {np.mean(np.abs(gaps)):.4f}, mean gap {np.mean(gaps):+.4f}")


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:]] + [20, 2000][len(sys.argv) - 1:]
    main(*args[:2])
