"""Benchmark ``beamscore score`` on a tranche of many small files.

    python bench/small_files.py [--files 1500] [--docs-per-file 10] [--workers 2]
                                [--repeat 3] [--beamscore EXE ...] [--out bench/out]

Lands ``--files`` JSONL files of ``--docs-per-file`` synthetic documents each
(``landing.samples.make_docs``, as ``run_bench.py``'s) in one tranche, trains the
bench's model with the default recipe (both cached under ``<out>/small-files``), then
times ``beamscore score`` on them: one fresh database and output folder a run. Given
several ``--beamscore`` executables (one checkout's against another's), each round runs
them all, every other round in reverse order, on the same files and model. Each run
must score every document. Prints wall time, docs/s and the CPU seconds of the process
tree per run and the median per executable.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import sys

from inputs import MODEL_NAME, train_model
from proctree import run_measured

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH_DIR)
DAY = "2026-03-01"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=1500, help="input files in the tranche")
    ap.add_argument("--docs-per-file", type=int, default=10, help="documents per file")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3, help="rounds over the executables")
    ap.add_argument("--beamscore", nargs="+", default=None, metavar="EXE",
                    help="beamscore executables to compare (default: this virtualenv's)")
    ap.add_argument("--out", default=os.path.join(BENCH_DIR, "out"))
    ap.add_argument("--train-docs", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--timeout", type=float, default=900, help="seconds per run")
    args = ap.parse_args(argv)
    if args.files < 1 or args.docs_per_file < 1 or args.repeat < 1 or args.workers < 1:
        ap.error("--files, --docs-per-file, --repeat and --workers must be >= 1")
    return args


def prepare(args: argparse.Namespace) -> dict[str, str]:
    """The landed files and the registered model, made once per settings (cached)."""
    from landing.samples import make_docs, write_tranche

    key = f"files-{args.files}x{args.docs_per_file}-seed{args.seed}-train{args.train_docs}"
    cache = os.path.join(args.out, "small-files", key)
    manifest = os.path.join(cache, "manifest.json")
    if os.path.exists(manifest):
        with open(manifest, encoding="utf-8") as fh:
            cached: dict[str, str] = json.load(fh)
        print(f"reusing {cache}")
        return cached
    shutil.rmtree(cache, ignore_errors=True)
    landing, registry = os.path.join(cache, "landing"), os.path.join(cache, "registry")
    docs = list(make_docs(args.files * args.docs_per_file, seed=args.seed))
    for i in range(args.files):
        write_tranche(landing, DAY, docs[i * args.docs_per_file:(i + 1) * args.docs_per_file],
                      "jsonl", name=f"part-{i:05d}")
    train_model(registry, args.train_docs, args.seed, (100, 600))
    out = {"input_root": landing, "registry": registry}
    with open(manifest, "w", encoding="utf-8") as fh:
        json.dump(out, fh)
    return out


def command(exe: str, inputs: dict[str, str], run_dir: str, workers: int) -> list[str]:
    return [exe, "score", "--date", DAY, "--input-root", inputs["input_root"],
            "--registry", inputs["registry"], "--model", MODEL_NAME,
            "--db", "sqlite:///" + os.path.join(run_dir, "beamscore.db"),
            "--output-dir", os.path.join(run_dir, "output"), "--workers", str(workers)]


def scored(run_dir: str) -> int:
    db = sqlite3.connect(os.path.join(run_dir, "beamscore.db"))
    try:
        return int(db.execute("SELECT count(*) FROM predictions").fetchone()[0])
    finally:
        db.close()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    inputs = prepare(args)
    n = args.files * args.docs_per_file
    exes = args.beamscore or [os.path.join(os.path.dirname(sys.executable), "beamscore")]
    walls: dict[str, list[float]] = {e: [] for e in exes}
    failed = False
    for rnd in range(args.repeat):
        for exe in exes if rnd % 2 == 0 else exes[::-1]:
            run_dir = os.path.join(args.out, "small-files", "run")
            shutil.rmtree(run_dir, ignore_errors=True)
            os.makedirs(run_dir)
            m = run_measured(command(exe, inputs, run_dir, args.workers),
                             os.path.join(args.out, "small-files", "run.log"), dict(os.environ),
                             args.timeout, cwd=REPO)
            rows = scored(run_dir) if m.rc == 0 else 0
            failed |= m.rc != 0 or rows != n
            walls[exe].append(m.wall)
            print(f"[round {rnd + 1}/{args.repeat}] {exe}: rc {m.rc}, {rows:,}/{n:,} scored, "
                  f"wall {m.wall:.2f}s, {n / m.wall:,.0f} docs/s, cpu {m.cpu:.2f}s, "
                  f"load before {m.load_before:.2f}, other cpu {m.other_cpu:.2f}s", flush=True)
    print(f"{args.files:,} files of {args.docs_per_file} documents, {args.workers} workers")
    for exe, w in walls.items():
        med = statistics.median(w)
        print(f"  {exe}: median wall {med:.2f}s, {n / med:,.0f} docs/s "
              f"({', '.join(f'{x:.2f}' for x in w)})")
    return 3 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
