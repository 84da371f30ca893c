"""Training bench: today's recipe against the cross-fitted default, on Debian's packages.

    python bench/train_bench.py                     # both recipes + `beamscore train` (~5 min)
    python bench/train_bench.py --recipes crossfit  # the default recipe only (~1 min)

The corpus is ``bench/debian_corpus.py``'s (one-line package descriptions labelled with
their section; 38,206 packages of the sections with 20 or more), split once 80/20
(stratified, seed 0). Each recipe runs in a process tree of its own
(``bench/proctree.py``: wall time, CPU seconds of the tree, the machine's other load
meanwhile), fits on the 80% part exactly as training does (its held-out evaluation and
reference profile included) and is scored on the 20% part:

- ``lbfgs``: the former recipe, LogisticRegression(C=10, lbfgs, max_iter=300) fitted on
  an 80/20 split of the training part and again on all of it, the reference profile
  scored by the split's model;
- ``crossfit``: ``models.recipe.train_cross_fitted`` (5 folds and a final fit, SGD on the
  logistic loss, in parallel processes) and the out-of-fold reference profile.

``--cli`` (on by default) also times ``beamscore train`` on the whole corpus. Results go
to ``<out>/train_results.json`` and a table on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from debian_corpus import build_corpus
from proctree import run_measured

RECIPES = ("lbfgs", "crossfit")


def _read(path: str) -> tuple[list[str], list[str]]:
    with open(path, encoding="utf-8") as fh:
        records = [json.loads(line) for line in fh]
    return [r["text"] for r in records], [r["label"] for r in records]


def _lbfgs(texts: list[str], labels: list[str]) -> Any:
    """The former ``beamscore train``: split fit, refit, reference from the split model."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    from models.behaviour import reference_files
    from models.recipe import build_pipeline

    def pipeline() -> Any:
        model = build_pipeline(len(texts))
        model.steps[-1] = ("clf", LogisticRegression(C=10.0, max_iter=300))
        return model

    x_tr, x_te, y_tr, y_te = train_test_split(texts, labels, test_size=0.2, random_state=0,
                                              stratify=labels)
    split = pipeline().fit(x_tr, y_tr)
    final = pipeline().fit(texts, labels)
    reference_files(final, x_te, y_te, None, 0.0, split)
    return final


def _crossfit(texts: list[str], labels: list[str]) -> Any:
    from models.behaviour import reference_files
    from models.recipe import train_cross_fitted

    fit = train_cross_fitted(texts, labels)
    reference_files(fit.model, texts, labels, fit.metrics, 0.0, held_out=fit.held_out)
    return fit.model


def contender(name: str, train: str, test: str, result: str) -> None:
    """One recipe, in this process: fit on ``train``, score ``test``, write ``result``."""
    import logging

    from sklearn.metrics import accuracy_score, f1_score

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    texts, labels = _read(train)
    started = time.perf_counter()
    model = (_lbfgs if name == "lbfgs" else _crossfit)(texts, labels)
    seconds = time.perf_counter() - started
    test_texts, test_labels = _read(test)
    predicted = model.predict(test_texts)
    with open(result, "w", encoding="utf-8") as fh:
        json.dump({"fit_seconds": round(seconds, 1),
                   "accuracy": round(float(accuracy_score(test_labels, predicted)), 4),
                   "macro_f1": round(float(f1_score(test_labels, predicted, average="macro")),
                                     4),
                   "features": len(model.steps[0][1].vocabulary_)}, fh)


def _corpus(out: str, n: int) -> tuple[str, str, str]:
    from sklearn.model_selection import train_test_split

    paths = tuple(os.path.join(out, f) for f in ("corpus.jsonl", "train.jsonl", "test.jsonl"))
    if not all(os.path.exists(p) for p in paths):
        records = build_corpus(n)
        train, test = train_test_split(records, test_size=0.2, random_state=0,
                                       stratify=[r["label"] for r in records])
        for path, part in zip(paths, (records, train, test)):
            with open(path, "w", encoding="utf-8") as fh:
                fh.writelines(json.dumps(r) + "\n" for r in part)
    return paths  # type: ignore[return-value]


def _measure(name: str, cmd: list[str], out: str) -> dict[str, Any]:
    m = run_measured(cmd, os.path.join(out, f"{name}.log"), dict(os.environ), 1800,
                     cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    row = {"rc": m.rc, "wall_s": round(m.wall, 1), "cpu_s": round(m.cpu, 1),
           "load_before": m.load_before, "other_cpu_s": round(m.other_cpu, 1),
           "max_procs": m.tree.max_procs, "peak_rss_mib": m.tree.peak_rss_kib // 1024}
    print(f"{name}: {row}", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench/out/train")
    parser.add_argument("--n", type=int, default=38_206, help="packages in the corpus")
    parser.add_argument("--recipes", default=",".join(RECIPES))
    parser.add_argument("--no-cli", dest="cli", action="store_false")
    parser.add_argument("--contender", choices=RECIPES, help=argparse.SUPPRESS)
    parser.add_argument("--files", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.contender:
        contender(args.contender, *args.files)
        return
    os.makedirs(args.out, exist_ok=True)
    corpus, train, test = _corpus(args.out, args.n)
    results: dict[str, Any] = {"cores": len(os.sched_getaffinity(0))}
    for name in args.recipes.split(","):
        result = os.path.join(args.out, f"{name}.json")
        row = _measure(name, [sys.executable, __file__, "--contender", name, "--files", train,
                              test, result], args.out)
        with open(result, encoding="utf-8") as fh:
            results[name] = row | json.load(fh)
    if args.cli:
        beamscore = os.path.join(os.path.dirname(sys.executable), "beamscore")
        registry = os.path.join(args.out, "registry")
        results["beamscore train"] = _measure("beamscore train", [
            beamscore, "train", "--docs", corpus, "--name", "debian", "--registry", registry],
            args.out)
    with open(os.path.join(args.out, "train_results.json"), "w", encoding="utf-8") as fh:
        json.dump(results, fh, indent=2)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
