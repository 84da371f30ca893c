"""The benchmark's input: synthetic documents and the one model every contender uses.

``prepare_inputs`` writes the tranches of generated documents (mostly JSONL, some Parquet)
under ``<out>/cache/<key>/landing``, trains one model with the default recipe and registers
it under ``<out>/cache/<key>/registry``, and records both in ``manifest.json`` next to them;
the key covers everything that changes the data or the model, so a later run with the same
settings reuses them. ``baselines.py`` reads that manifest; ``run_bench.py`` passes it to
every contender.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import time
from typing import Any

DAYS = ("2026-03-01", "2026-03-02")
FILES_PER_TRANCHE = ("jsonl", "jsonl", "jsonl", "parquet")  # mostly JSONL, some Parquet
MODEL_NAME = "bench"
DATA_VERSION = 1  # bump when the generated layout changes: invalidates caches


def cache_key(n_docs: int, seed: int, train_docs: int, chars: tuple[int, int]) -> str:
    key = f"docs-{n_docs}-seed{seed}-train{train_docs}-v{DATA_VERSION}"
    return key + f"-chars{chars[0]}-{chars[1]}"


def manifest_file(manifest: dict[str, Any]) -> str:
    """Where ``prepare_inputs`` wrote ``manifest`` (next to the landing area)."""
    return os.path.join(os.path.dirname(manifest["input_root"]), "manifest.json")


def _cached_manifest(manifest_path: str) -> dict[str, Any] | None:
    """The manifest at ``manifest_path`` if it and every file it names still exist."""
    if not os.path.exists(manifest_path):
        return None
    with open(manifest_path, encoding="utf-8") as fh:
        manifest: dict[str, Any] = json.load(fh)
    if all(os.path.exists(f["path"]) for f in manifest["files"]) and os.path.exists(
            manifest["model_path"]):
        return manifest
    return None


def generate_tranches(landing: str, n_docs: int, seed: int,
                      chars: tuple[int, int]) -> tuple[list[dict[str, Any]], float]:
    """Write ``n_docs`` documents as ``FILES_PER_TRANCHE`` files for each of ``DAYS``;
    returns the files (tranche, path, format, size, docs) and the seconds it took."""
    from landing.samples import make_docs, write_tranche

    started = time.monotonic()
    n_files = len(DAYS) * len(FILES_PER_TRANCHE)
    sizes = [n_docs // n_files + (1 if i < n_docs % n_files else 0) for i in range(n_files)]
    docs = make_docs(n_docs, seed=seed, min_chars=chars[0], max_chars=chars[1])
    files: list[dict[str, Any]] = []
    k = 0
    for day in DAYS:
        for j, fmt in enumerate(FILES_PER_TRANCHE):
            batch = list(itertools.islice(docs, sizes[k]))
            k += 1
            path = write_tranche(landing, day, batch, fmt, name=f"part-{j}")
            files.append({"tranche": day, "path": os.path.abspath(path), "format": fmt,
                          "size": os.path.getsize(path), "docs": len(batch)})
    gen_seconds = time.monotonic() - started
    print(f"generated {n_docs:,} documents in {len(files)} files "
          f"({sum(f['size'] for f in files) / 2**20:,.0f} MiB) in {gen_seconds:.1f}s")
    return files, gen_seconds


def train_model(registry: str, train_docs: int, seed: int,
                chars: tuple[int, int]) -> tuple[Any, dict[str, Any], float]:
    """Train ``MODEL_NAME`` on ``train_docs`` other generated documents and register it in
    ``registry``; returns the registry's reference, the metrics and the seconds it took."""
    from landing.samples import make_docs
    from models.preprocess import PreprocessConfig, preprocess_texts
    from models.recipe import train_and_evaluate
    from models.registry import ModelRegistry

    started = time.monotonic()
    tdocs = list(make_docs(train_docs, seed=seed + 1, min_chars=chars[0], max_chars=chars[1],
                           prefix="train"))
    pre = PreprocessConfig()
    texts = preprocess_texts([d["text"] for d in tdocs], pre)
    model, metrics = train_and_evaluate(texts, [d["label"] for d in tdocs])
    ref = ModelRegistry(registry).register(MODEL_NAME, model, preprocessing=pre.to_dict(),
                                           source="bench", metrics=metrics)
    train_seconds = time.monotonic() - started
    print(f"trained {MODEL_NAME}:{ref.version} on {train_docs:,} documents in "
          f"{train_seconds:.1f}s: accuracy {metrics['accuracy']}, macro F1 {metrics['macro_f1']}")
    return ref, metrics, train_seconds


def _write_manifest(manifest_path: str, manifest: dict[str, Any]) -> None:
    tmp = manifest_path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(manifest, fh, indent=2)
    os.replace(tmp, manifest_path)


def prepare_inputs(out: str, n_docs: int, seed: int, train_docs: int, fresh: bool,
                   chars: tuple[int, int] = (100, 600)) -> dict[str, Any]:
    """Generate the tranches and train/register the model once per (N, seed, train docs,
    document lengths)."""
    cache = os.path.join(out, "cache", cache_key(n_docs, seed, train_docs, chars))
    manifest_path = os.path.join(cache, "manifest.json")
    cached = None if fresh else _cached_manifest(manifest_path)
    if cached is not None:
        print(f"reusing generated data and model in {cache}")
        cached["reused"] = True
        return cached
    shutil.rmtree(cache, ignore_errors=True)
    os.makedirs(cache)

    landing = os.path.join(cache, "landing")
    files, gen_seconds = generate_tranches(landing, n_docs, seed, chars)
    registry = os.path.join(cache, "registry")
    ref, metrics, train_seconds = train_model(registry, train_docs, seed, chars)
    manifest = {
        "n_docs": n_docs, "seed": seed, "train_docs": train_docs, "dates": list(DAYS),
        "input_root": os.path.abspath(landing), "files": files,
        "registry": os.path.abspath(registry), "model_name": MODEL_NAME,
        "model_version": ref.version, "sha256": ref.sha256,
        "model_path": os.path.abspath(os.path.join(registry, MODEL_NAME, ref.version,
                                                   "model.joblib")),
        "classes": ref.metadata["classes"], "metrics": metrics,
        "generate_seconds": round(gen_seconds, 1), "train_seconds": round(train_seconds, 1),
    }
    _write_manifest(manifest_path, manifest)
    manifest["reused"] = False
    return manifest


def warm_page_cache(manifest: dict[str, Any]) -> None:
    """Read every input once, so that every contender starts with the same page cache."""
    for f in manifest["files"]:
        with open(f["path"], "rb") as fh:
            while fh.read(16 << 20):
                pass
