"""Benchmark ``beamscore score`` against the plain and stock-Beam ways of doing the same job.

    python bench/run_bench.py [--docs N] [--workers 2] [--out bench/out] [--guard RATIO]
                              [--contenders a,b,b2,c,d] [--keep] [--fresh] [--repeat K]

Generates N synthetic documents (cached per N under ``<out>/cache``), trains one model
with the default recipe, then runs every contender as its own process tree on the same
files and the same model, measuring wall time and the peak summed RSS of the tree.
See bench/README.md. Exit status: 0 ok, 1 guard failed, 2 usage error, 3 a contender
failed or scored a wrong number of documents.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from contenders import CONTENDERS, Result, check_outputs, contender_command, log_tail
from inputs import manifest_file, prepare_inputs, warm_page_cache
from proctree import Measurement, run_measured
from report import apply_guard, assess, machine_info, print_summary, write_results

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH_DIR)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=200_000, help="documents to score")
    ap.add_argument("--workers", type=int, default=2, help="processes for b2, c and d")
    ap.add_argument("--out", default=os.path.join(BENCH_DIR, "out"),
                    help="cache, contender outputs and results.json")
    ap.add_argument("--guard", type=float, default=None, metavar="RATIO",
                    help="exit 1 when docs/s of c divided by docs/s of a is below RATIO")
    ap.add_argument("--contenders", default="a,b,b2,c0,c,d",
                    help="comma-separated, run in this order (a, b, b2, c0, c, d)")
    ap.add_argument("--keep", action="store_true",
                    help="keep each contender's outputs (predictions, databases) under "
                         "<out>/runs; the generated data and model are always cached")
    ap.add_argument("--fresh", action="store_true", help="regenerate data and retrain")
    ap.add_argument("--repeat", type=int, default=1,
                    help="rounds over all contenders (interleaved, every other round in "
                         "reverse order); median wall is reported")
    ap.add_argument("--train-docs", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--min-chars", type=int, default=100, help="shortest document")
    ap.add_argument("--max-chars", type=int, default=600,
                    help="longest document (lengths uniform in min..max; the issue's "
                         "workload is 'a few hundred characters')")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per contender run")
    args = ap.parse_args(argv)
    names = [c.strip() for c in args.contenders.split(",") if c.strip()]
    unknown = [c for c in names if c not in CONTENDERS]
    if unknown or not names or len(set(names)) != len(names):
        ap.error(f"--contenders: expected distinct names from {','.join(CONTENDERS)}")
    if args.guard is not None and not {"a", "c"} <= set(names):
        ap.error("--guard needs contenders a and c")
    if args.docs < args.train_docs // 10 or args.docs < 100:
        ap.error("--docs too small")
    if args.workers < 1 or args.repeat < 1:
        ap.error("--workers and --repeat must be >= 1")
    args.names = names
    return args


def contender_env() -> dict[str, str]:
    """This environment, with the bench directory and the repository first on PYTHONPATH."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [BENCH_DIR, REPO] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


def round_order(names: list[str], rnd: int) -> list[str]:
    """The contenders of round ``rnd`` (0-based): in the given order, reversed in every
    other round. What runs just before a contender can change its time (on a VM whose
    freed memory goes back to the host, a run right after a large one finds that memory
    still at hand), so over an even number of rounds every contender precedes each other
    one as often as it follows it."""
    return list(names) if rnd % 2 == 0 else list(reversed(names))


@dataclass
class Rounds:
    """Runs the contenders round after round on one manifest; collects their results and,
    from the last round (or a failed one), their outputs."""

    args: argparse.Namespace
    manifest: dict[str, Any]
    out: str
    env: dict[str, str] = field(default_factory=contender_env)
    results: dict[str, Result] = field(default_factory=dict)
    frames: dict[str, Any] = field(default_factory=dict)

    def run(self) -> None:
        for rnd in range(self.args.repeat):
            for name in round_order(self.args.names, rnd):
                self.run_one(name, rnd)

    def run_one(self, name: str, rnd: int) -> None:
        """Run contender ``name`` once in round ``rnd`` (0-based) and record it."""
        args = self.args
        run_dir = os.path.join(self.out, "runs", name)
        shutil.rmtree(run_dir, ignore_errors=True)
        os.makedirs(run_dir)
        cmd = contender_command(name, self.manifest, manifest_file(self.manifest), run_dir,
                                args.workers)
        short = CONTENDERS[name][0].format(w=args.workers)
        res = self.results.setdefault(name, Result(name, short, shlex.join(cmd)))
        log = os.path.join(self.out, f"{name}.log")
        res.log = log
        print(f"[round {rnd + 1}/{args.repeat}] {name}: {short} ...", flush=True)
        m = run_measured(cmd, log, self.env, args.timeout, cwd=REPO)
        why = res.record(m, rnd)
        print_round(m, res)
        if why is not None:
            print(f"    FAILED ({why}); last lines of {log}:\n{log_tail(log)}", flush=True)
        if rnd == args.repeat - 1 or m.rc != 0:
            frame = check_outputs(res, run_dir, self.manifest)
            if frame is not None:
                self.frames[name] = frame
        if not args.keep:
            shutil.rmtree(run_dir, ignore_errors=True)


def print_round(m: Measurement, res: Result) -> None:
    print(f"    exit {m.rc}, {m.wall:.1f}s wall, {m.cpu:.1f}s CPU, peak RSS "
          f"{m.tree.peak_rss_kib / 1024:,.0f} MiB over {m.tree.max_procs} process(es); "
          f"other jobs used {res.others[-1]:.0%} of the machine", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t0 = time.monotonic()
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    info = machine_info()
    print(f"beamscore bench: {args.docs:,} docs, workers={args.workers}, "
          f"contenders={','.join(args.names)}, repeat={args.repeat}; "
          f"{info.get('cpus')} CPU(s) {info.get('cpu', '')}, load {info.get('loadavg_at_start')}")
    manifest = prepare_inputs(out, args.docs, args.seed, args.train_docs, args.fresh,
                              chars=(args.min_chars, args.max_chars))
    prepared = time.monotonic() - t0
    warm_page_cache(manifest)  # same page-cache state for everyone

    rounds = Rounds(args, manifest, out)
    rounds.run()
    outcome = assess(rounds.results, rounds.frames)
    print_summary(outcome, manifest, args.workers, args.repeat)
    status = apply_guard(outcome, args.guard)
    total = time.monotonic() - t0
    print(f"total bench time {total:.0f}s (data+model {'reused' if manifest['reused'] else 'built'}"
          f" in {prepared:.0f}s)")
    write_results(os.path.join(out, "results.json"), outcome, args, info, manifest, total)
    return status


if __name__ == "__main__":
    sys.exit(main())
