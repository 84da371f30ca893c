"""The scaling table of ``bench/device/run.sh``: one row per worker count, from the
``results-w<W>.json`` files that run leaves (``bench/run_bench.py``'s ``results.json``).

    python bench/device/summary.py DIR

Columns: the plain process pool ``d`` and beamscore ``c`` in docs/s, c/d, beamscore's
pipeline-only docs/s (its own "wall time"), c/c1 (c1: beamscore at 1 worker, from the
W=1 file, as the one-process script ``a``) and start-up plus teardown (c's wall time
less its pipeline's).
"""

from __future__ import annotations

import glob
import json
import os
import re
import sys
from typing import Any


def _load(directory: str) -> dict[int, dict[str, Any]]:
    runs = {}
    for path in glob.glob(os.path.join(directory, "results-w*.json")):
        match = re.search(r"results-w(\d+)\.json$", path)
        if match:
            with open(path, encoding="utf-8") as fh:
                runs[int(match.group(1))] = json.load(fh)["contenders"]
    return runs


def table(runs: dict[int, dict[str, Any]]) -> list[str]:
    one = runs.get(1, {})
    a, c1 = one.get("a", {}).get("docs_per_s"), one.get("c1", {}).get("docs_per_s")
    lines = [f"W=1: a {a or 0:,.0f} docs/s, c1 {c1 or 0:,.0f} docs/s",
             f"{'W':>3} {'d docs/s':>10} {'c docs/s':>10} {'c/d':>6} {'c pipeline':>11} "
             f"{'c/c1':>6} {'start+end s':>12} {'c wall s':>9} {'c RSS MiB':>10}"]
    for w in sorted(k for k in runs if k > 1):
        c, d = runs[w].get("c", {}), runs[w].get("d", {})
        rate_c, rate_d = c.get("docs_per_s") or 0.0, d.get("docs_per_s") or 0.0
        pipeline = c.get("product_wall")
        outside = c["wall"] - pipeline if pipeline and c.get("wall") else None
        lines.append(
            f"{w:>3} {rate_d:>10,.0f} {rate_c:>10,.0f} "
            f"{(rate_c / rate_d if rate_d else 0):>6.2f} "
            f"{(c.get('scored', 0) / pipeline if pipeline else 0):>11,.0f} "
            f"{(rate_c / c1 if c1 else 0):>6.2f} "
            f"{(outside if outside is not None else float('nan')):>12.1f} "
            f"{c.get('wall', float('nan')):>9.1f} {c.get('peak_rss_mib', 0):>10,.0f}")
    return lines


if __name__ == "__main__":
    print("\n".join(table(_load(sys.argv[1] if len(sys.argv) > 1 else "."))))
