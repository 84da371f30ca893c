"""Featurisation bench: the scoring path's vectoriser alone, against scikit-learn's.

    python bench/featurise_bench.py --stages          # 150,000 docs, batches of 4,096
    python bench/featurise_bench.py --docs 50000 --batch 1024

On ``bench/run_bench.py``'s documents (its JSONL files: 150,000 of its default 200,000;
at most ``--docs``) and model (generated and trained once, cached under ``--out``),
preprocessed as a run preprocesses them, one process, the math
libraries on one thread: ``models.fastpath.FastTextPipeline.transform`` (what a worker
runs for every batch) and the fitted vectoriser's own ``transform``, batch after batch,
in ``--repeat`` interleaved rounds (the median reported). The fast path's matrices must
equal scikit-learn's (indices, indptr and data, bit for bit): the bench exits 1 if one
differs. ``--stages`` also times the fast path's steps for one batch in ten: the count
matrix (``_count_matrix``: the sort of the batch's (row, column) keys) apart from
tokenising and looking up.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import sys
import time
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from inputs import prepare_inputs  # noqa: E402

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))


def _texts(manifest: dict[str, Any], n: int) -> list[str]:
    """The first ``n`` documents' texts of the JSONL inputs, preprocessed."""
    from models.preprocess import PreprocessConfig, preprocess_texts

    texts: list[str] = []
    for path in sorted(glob.glob(os.path.join(manifest["input_root"], "*", "*.jsonl"))):
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                texts.append(json.loads(line)["text"])
                if len(texts) >= n:
                    return preprocess_texts(texts, PreprocessConfig())
    return preprocess_texts(texts, PreprocessConfig())


def _same(a: Any, b: Any) -> bool:
    import numpy as np

    return all(np.array_equal(getattr(a, k), getattr(b, k))
               for k in ("indptr", "indices", "data"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--docs", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--stages", action="store_true")
    ap.add_argument("--out", default=os.path.join(BENCH_DIR, "out"),
                    help="the cache of run_bench.py's documents and model")
    args = ap.parse_args(argv)

    import joblib

    from models.fastpath import FastTextPipeline

    manifest = prepare_inputs(args.out, 200_000, 42, 20_000, False)
    model = joblib.load(manifest["model_path"])
    vec = model.steps[0][1]
    fast = FastTextPipeline(model)
    texts = _texts(manifest, args.docs)
    batches = [texts[i:i + args.batch] for i in range(0, len(texts), args.batch)]
    for b in batches[:2]:  # warm both paths; check every batch once below
        fast.transform(b), vec.transform(b)
    times: dict[str, list[float]] = {"fast": [], "sklearn": []}
    for rnd in range(args.repeat):
        for name in (("fast", "sklearn") if rnd % 2 == 0 else ("sklearn", "fast")):
            fn = fast.transform if name == "fast" else vec.transform
            started = time.process_time()
            for b in batches:
                fn(b)
            times[name].append(time.process_time() - started)
    differ = sum(not _same(fast.transform(b), vec.transform(b)) for b in batches)
    fast_s, skl_s = statistics.median(times["fast"]), statistics.median(times["sklearn"])
    print(f"{len(texts):,} docs in {len(batches)} batches of {args.batch}; "
          f"{args.repeat} round(s), median CPU seconds")
    print(f"  fast path   {fast_s:7.2f} s  {len(texts) / fast_s:10,.0f} docs/s")
    print(f"  scikit-learn {skl_s:6.2f} s  {len(texts) / skl_s:10,.0f} docs/s")
    print(f"  fast/sklearn {skl_s / fast_s:.2f}x   batches whose matrix differs: {differ}")
    if args.stages:
        _stages(fast, batches[::10])
    return 1 if differ else 0


def _stages(fast: Any, batches: list[list[str]]) -> None:
    """CPU seconds of ``_count_matrix`` within ``transform``, over ``batches``."""
    spent = {"count_matrix": 0.0}
    original = type(fast)._count_matrix

    def timed(self: Any, *a: Any) -> Any:
        started = time.process_time()
        try:
            return original(self, *a)
        finally:
            spent["count_matrix"] += time.process_time() - started

    type(fast)._count_matrix = timed
    try:
        started = time.process_time()
        for b in batches:
            fast.transform(b)
        total = time.process_time() - started
    finally:
        type(fast)._count_matrix = original
    print(f"  stages over {len(batches)} batch(es): transform {total * 1000:.0f} ms, of which "
          f"count matrix {spent['count_matrix'] * 1000:.0f} ms")


if __name__ == "__main__":
    sys.exit(main())
