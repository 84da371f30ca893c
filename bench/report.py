"""What ``run_bench.py`` reports once every contender has run: the printed summary and
``results.json``.

``assess`` turns the contenders' ``Result``s and outputs into an ``Outcome``: label
agreement with a reference contender, the throughput and CPU ratios of beamscore (c) to
every other contender (of median wall times, and per round: ``paired_ratios``), and
warnings about failed checks, a busy machine or disagreeing
contenders. ``print_summary`` prints the input, the table and those figures;
``apply_guard`` decides the exit status and the ``--guard`` verdict; ``write_results``
writes everything, with the machine's description from ``machine_info``, to
``results.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import statistics
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

from contenders import CONTENDERS, Result, compare_labels

OTHERS = ("a", "b", "d", "b2", "c0", "c1", "c8", "ct")  # what c is compared with, in this order


@dataclass
class Outcome:
    results: dict[str, Result]
    reference: str | None  # the contender every other one's labels are compared with
    agreement: dict[str, dict[str, Any]]
    ratios: dict[str, float]  # docs/s of c over docs/s of the other
    cpu_ratios: dict[str, float]  # CPU seconds of the other over CPU seconds of c
    warnings: list[str]
    guard: dict[str, Any] | None = None
    status: int = 0
    paired: dict[str, list[float]] = field(default_factory=dict)  # c/other, round by round


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {"cpus": os.cpu_count(), "python": platform.python_version(),
                            "platform": platform.platform()}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            info["cpu"] = next((ln.split(":", 1)[1].strip() for ln in fh
                                if ln.startswith("model name")), "")
        with open("/proc/loadavg", encoding="utf-8") as fh:
            info["loadavg_at_start"] = fh.read().split()[:3]
    except OSError:
        pass
    for mod in ("apache_beam", "sklearn", "pandas", "pyarrow", "numpy"):
        try:
            info[mod] = __import__(mod).__version__
        except ImportError:
            pass
    return info


def ratio(results: dict[str, Result], num: str, den: str) -> float | None:
    a, b = results.get(num), results.get(den)
    if not a or not b or not a.walls or not b.walls or not a.rate or not b.rate:
        return None
    return a.rate / b.rate


def throughput_ratios(results: dict[str, Result]) -> dict[str, float]:
    ratios = {f"c/{o}": ratio(results, "c", o) for o in OTHERS if o in results}
    return {k: v for k, v in ratios.items() if v is not None}


def paired_ratios(results: dict[str, Result]) -> dict[str, list[float]]:
    """c's throughput over each other contender's in every round both completed (the
    other's wall time over c's: both score the same documents). The contenders of a
    round run one after the other, so a host whose speed drifts between rounds moves
    both sides of a round's ratio alike; the ratio of medians may compare runs of
    different rounds."""
    c = results.get("c")
    if c is None:
        return {}
    paired = {}
    for other in OTHERS:
        r = results.get(other)
        if r is None:
            continue
        rounds = [wall / c_wall for c_wall, wall, c_rc, rc
                  in zip(c.walls, r.walls, c.rcs, r.rcs, strict=False)
                  if c_rc == 0 and rc == 0 and c_wall > 0]
        if rounds:
            paired[f"c/{other}"] = rounds
    return paired


def cpu_time_ratios(results: dict[str, Result]) -> dict[str, float]:
    return {f"c/{o}": results["c"].cpu and (results[o].cpu / results["c"].cpu)
            for o in OTHERS
            if o in results and "c" in results
            and results["c"].cpus and results[o].cpus}


def collect_warnings(results: dict[str, Result], reference: str | None,
                     agreement: dict[str, dict[str, Any]]) -> list[str]:
    warnings: list[str] = []
    for name, r in results.items():
        for p in r.problems:
            warnings.append(f"{name}: {p}")
    cpus = os.cpu_count() or 1
    busy = {n: max(r.others) for n, r in results.items() if r.others and max(r.others) > 0.10}
    if busy:
        warnings.append("other jobs used the machine during some runs ("
                        + ", ".join(f"{n}: {v:.0%} of {cpus} CPU(s)" for n, v in busy.items())
                        + "); wall-time ratios are noisy, compare CPU s and docs/CPUs too")
    counts = {n: r.scored for n, r in results.items()}
    if len(set(counts.values())) > 1:
        warnings.append("contenders scored different numbers of documents: "
                        + ", ".join(f"{n}={c:,}" for n, c in counts.items()))
    for name, agr in agreement.items():
        if agr["label_differs"]:
            warnings.append(f"{name}: {agr['label_differs']:,} of {agr['compared']:,} labels "
                            f"differ from {reference}")
        if agr["max_score_diff"] > 1e-6:
            warnings.append(f"{name}: scores differ from {reference} by up to "
                            f"{agr['max_score_diff']:.2e}")
    return warnings


def assess(results: dict[str, Result], frames: dict[str, Any]) -> Outcome:
    """Agreement with contender a (else the first one whose outputs could be read),
    ratios and warnings."""
    reference = "a" if "a" in frames else next(iter(frames), None)
    agreement = compare_labels(frames, reference) if reference else {}
    return Outcome(results=results, reference=reference, agreement=agreement,
                   ratios=throughput_ratios(results), cpu_ratios=cpu_time_ratios(results),
                   warnings=collect_warnings(results, reference, agreement),
                   paired=paired_ratios(results))


def format_table(results: dict[str, Result]) -> str:
    head = (f"{'':<3}{'contender':<40}{'docs':>9}{'wall s':>8}{'docs/s':>8}{'CPU s':>8}"
            f"{'docs/CPUs':>10}{'RSS MiB':>9}{'PSS MiB':>9}{'max1 MiB':>9}{'procs':>6}"
            f"{'other':>6}  check")
    lines = [head, "-" * len(head)]
    for name, r in results.items():
        check = "ok" if r.ok else "MISMATCH"
        per_cpu = r.scored / r.cpu if r.cpus and r.cpu > 0 else 0.0
        lines.append(f"{name:<3}{r.description[:39]:<40}{r.scored:>9,}{r.wall:>8.1f}"
                     f"{r.rate:>8,.0f}{r.cpu:>8.1f}{per_cpu:>10,.0f}{r.peak_rss_mib:>9,.0f}"
                     f"{r.peak_pss_mib:>9,.0f}{r.peak_single_rss_mib:>9,.0f}{r.max_procs:>6}"
                     f"{max(r.others, default=0):>6.0%}  {check}")
    return "\n".join(lines)


def _print_input(manifest: dict[str, Any], workers: int, repeat: int) -> None:
    total_mib = sum(f["size"] for f in manifest["files"]) / 2**20
    n_json = sum(1 for f in manifest["files"] if f["format"] != "parquet")
    print(f"input: {manifest['n_docs']:,} docs, {len(manifest['files'])} files "
          f"({n_json} JSONL, {len(manifest['files']) - n_json} Parquet, {total_mib:,.0f} MiB) "
          f"in {len(manifest['dates'])} tranches; model {manifest['model_name']}:"
          f"{manifest['model_version']} (accuracy {manifest['metrics']['accuracy']}); "
          f"workers={workers}; repeat={repeat} (median wall)")


def print_summary(outcome: Outcome, manifest: dict[str, Any], workers: int,
                  repeat: int) -> None:
    results = outcome.results
    print()
    _print_input(manifest, workers, repeat)
    print(format_table(results))
    for name in results:
        print(f"  {name}: {CONTENDERS[name][1].format(w=workers)}")
    product_wall = results["c"].product_wall if "c" in results else None
    if product_wall:
        print(f"c: beamscore's own 'wall time' (pipeline only, without CLI start-up): "
              f"{product_wall:.1f}s = {results['c'].scored / product_wall:,.0f} docs/s")
    for name, agr in outcome.agreement.items():
        print(f"agreement {name} vs {outcome.reference}: {agr['label_differs']:,} labels "
              f"differ of {agr['compared']:,}, max |score diff| {agr['max_score_diff']:.1e}")
    print("ratio " + " ".join(f"{k}={v:.2f}" for k, v in outcome.ratios.items())
          + "   (throughput ratio, docs/s; > 1 means beamscore is faster)")
    paired = {k: v for k, v in outcome.paired.items() if len(v) > 1}
    if paired:
        print("paired " + " ".join(f"{k}={statistics.median(v):.2f}" for k, v in paired.items())
              + "   (median of the rounds' own ratios: the host's drift between rounds cancels)")
    if "c/c8" in outcome.ratios:
        print(f"workers c8/c={1 / outcome.ratios['c/c8']:.2f}   (docs/s at 8 workers over "
              f"docs/s at {workers}; >= 0.9 is the target on 2 cores)")
        if "c/c8" in paired:
            rounds = [1 / r for r in paired["c/c8"]]
            print(f"  rounds c8/c: {' / '.join(f'{r:.2f}' for r in rounds)} "
                  f"(median {statistics.median(rounds):.2f})")
    if outcome.cpu_ratios:
        print("cpu-ratio " + " ".join(f"{k}={v:.2f}" for k, v in outcome.cpu_ratios.items())
              + "   (CPU seconds of the other / CPU seconds of c; > 1 means c needs less CPU)")
    for w in outcome.warnings:
        print(f"WARNING: {w}")


def apply_guard(outcome: Outcome, min_ratio: float | None) -> int:
    """Set and return the exit status: 3 when a contender failed a check, 1 (instead)
    when ``min_ratio`` is given and c/a is below it or a or c failed; prints the verdict."""
    results = outcome.results
    if any(not r.ok for r in results.values()):
        outcome.status = 3
    if min_ratio is not None:
        value = outcome.ratios.get("c/a")
        passed = value is not None and value >= min_ratio and results["a"].ok and \
            results["c"].ok
        outcome.guard = {"min_ratio": min_ratio, "ratio": value, "passed": passed}
        print(f"guard c/a >= {min_ratio}: {'PASS' if passed else 'FAIL'}"
              + ("" if value is not None else " (no ratio)"))
        if not passed:
            outcome.status = 1
    return outcome.status


def write_results(path: str, outcome: Outcome, args: argparse.Namespace,
                  info: dict[str, Any], manifest: dict[str, Any], total: float) -> None:
    report = {
        "started_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join([sys.executable, *sys.argv]),
        "args": {k: v for k, v in vars(args).items()},
        "machine": info,
        "input": {k: manifest[k] for k in ("n_docs", "seed", "train_docs", "dates", "files",
                                           "input_root")},
        "model": {k: manifest[k] for k in ("registry", "model_name", "model_version", "sha256",
                                           "model_path", "classes", "metrics")},
        "contenders": {n: {**asdict(r), "wall": r.wall, "docs_per_s": r.rate, "cpu": r.cpu,
                           "ok": r.ok}
                       for n, r in outcome.results.items()},
        "agreement": {"reference": outcome.reference, **outcome.agreement},
        "ratios": outcome.ratios,
        "cpu_ratios": outcome.cpu_ratios,
        "paired_ratios": outcome.paired,
        "guard": outcome.guard,
        "warnings": outcome.warnings,
        "exit_status": outcome.status,
        "total_seconds": round(total, 1),
    }
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(report, fh, indent=2, default=str)
    print(f"results written to {path}")
