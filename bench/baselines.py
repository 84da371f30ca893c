"""Benchmark contenders other than the product, each run as its own process.

    python bench/baselines.py {plain,pool,beam} --manifest M --out DIR [--workers W]

``plain`` (contender a): one process, pandas + scikit-learn, file by file.
``pool``  (contender d): the same per-file function over a ProcessPoolExecutor.
``beam``  (contenders b, b2): stock Beam, element-wise, with RunInference and
``SklearnModelHandlerNumpy``; ``--workers 1`` is in-memory FnApiRunner, ``--workers 2``
is FnApiRunner multi_processing.

The manifest (written by ``run_bench.py``) lists the input files and the model. Each
contender writes ``<out>/summary.json`` with the number of documents it scored and its
own timing; ``run_bench.py`` measures wall time and memory from outside and checks the
outputs itself.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import time
from collections.abc import Iterator
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from models.preprocess import PreprocessConfig, preprocess_text, preprocess_texts

PREDICT_CHUNK = 4096
TABLE_DDL = ("CREATE TABLE IF NOT EXISTS predictions (doc_id TEXT PRIMARY KEY, tranche TEXT "
             "NOT NULL, label TEXT NOT NULL, score REAL NOT NULL, source_file TEXT NOT NULL)")
INSERT = "INSERT INTO predictions VALUES (?, ?, ?, ?, ?)"


def load_manifest(path: str) -> dict[str, Any]:
    with open(path, encoding="utf-8") as fh:
        data: dict[str, Any] = json.load(fh)
    return data


# --------------------------------------------------------------- plain script (a, d)
def read_file(path: str, fmt: str) -> pd.DataFrame:
    if fmt == "parquet":
        return pd.read_parquet(path, columns=["id", "text"])
    return pd.read_json(path, lines=True, dtype=False)[["id", "text"]]


def score_file(model: Any, path: str, fmt: str, tranche: str,
               out_dir: str) -> list[tuple[str, str, str, float, str]]:
    """Read, preprocess, predict in chunks, write one Parquet; returns the DB rows."""
    df = read_file(path, fmt)
    texts = preprocess_texts(df["text"].tolist(), PreprocessConfig())
    classes = np.asarray([str(c) for c in model.classes_], dtype=object)
    labels: list[str] = []
    scores: list[float] = []
    for i in range(0, len(texts), PREDICT_CHUNK):
        probs = model.predict_proba(texts[i:i + PREDICT_CHUNK])
        best = probs.argmax(axis=1)
        labels.extend(classes[best].tolist())
        scores.extend(probs[np.arange(len(best)), best].tolist())
    ids = df["id"].astype(str).tolist()
    name = os.path.basename(path).split(".")[0]
    folder = os.path.join(out_dir, f"dt={tranche}")
    os.makedirs(folder, exist_ok=True)
    pq.write_table(pa.table({"doc_id": ids, "tranche": [tranche] * len(ids), "label": labels,
                             "score": scores, "source_file": [path] * len(ids)}),
                   os.path.join(folder, f"{name}.parquet"))
    return list(zip(ids, [tranche] * len(ids), labels, scores, [path] * len(ids)))


def run_plain(manifest: dict[str, Any], out_dir: str) -> int:
    model = joblib.load(manifest["model_path"])
    db = sqlite3.connect(os.path.join(out_dir, "predictions.db"), isolation_level=None)
    db.execute(TABLE_DDL)
    db.execute("BEGIN")
    n = 0
    for f in manifest["files"]:
        rows = score_file(model, f["path"], f["format"], f["tranche"], out_dir)
        db.executemany(INSERT, rows)
        n += len(rows)
    db.execute("COMMIT")
    db.close()
    return n


_POOL_MODEL: Any = None


def _pool_init(model_path: str) -> None:
    global _POOL_MODEL
    _POOL_MODEL = joblib.load(model_path)


def _pool_task(path: str, fmt: str, tranche: str, out_dir: str, db_path: str) -> int:
    rows = score_file(_POOL_MODEL, path, fmt, tranche, out_dir)
    db = sqlite3.connect(db_path, timeout=600, isolation_level=None)
    db.execute("BEGIN IMMEDIATE")
    db.executemany(INSERT, rows)
    db.execute("COMMIT")
    db.close()
    return len(rows)


def run_pool(manifest: dict[str, Any], out_dir: str, workers: int) -> int:
    from concurrent.futures import ProcessPoolExecutor

    db_path = os.path.join(out_dir, "predictions.db")
    db = sqlite3.connect(db_path)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute(TABLE_DDL)
    db.commit()
    db.close()
    # Largest files first, so the two processes finish together.
    files = sorted(manifest["files"], key=lambda f: -f["size"])
    with ProcessPoolExecutor(max_workers=workers, initializer=_pool_init,
                             initargs=(manifest["model_path"],)) as pool:
        futures = [pool.submit(_pool_task, f["path"], f["format"], f["tranche"], out_dir,
                               db_path) for f in files]
        return sum(fut.result() for fut in futures)


# --------------------------------------------------------------- stock Beam (b, b2)
def _proba_inference_fn(model: Any, batch: Any, inference_args: Any = None) -> Any:
    # SklearnModelHandlerNumpy wraps what this returns into PredictionResults
    # (utils._convert_to_result zips the batch with the rows).
    return model.predict_proba(list(batch))


def run_beam(manifest: dict[str, Any], out_dir: str, workers: int) -> int:
    import apache_beam as beam
    from apache_beam.ml.inference.base import KeyedModelHandler, RunInference
    from apache_beam.ml.inference.sklearn_inference import ModelFileType, SklearnModelHandlerNumpy
    from apache_beam.options.pipeline_options import PipelineOptions

    cfg = PreprocessConfig()
    classes = list(manifest["classes"])
    handler = KeyedModelHandler(SklearnModelHandlerNumpy(
        model_uri=manifest["model_path"], model_file_type=ModelFileType.JOBLIB,
        inference_fn=_proba_inference_fn))

    def fmt(kv: Any) -> str:
        doc_id, result = kv
        probs = result.inference
        best = int(np.argmax(probs))
        return json.dumps({"id": doc_id, "label": classes[best], "score": float(probs[best])})

    options = PipelineOptions(
        [], runner="FnApiRunner", direct_num_workers=workers,
        direct_running_mode="multi_processing" if workers > 1 else "in_memory")
    with beam.Pipeline(options=options) as p:
        reads = []
        for i, f in enumerate(manifest["files"]):
            if f["format"] == "parquet":
                reads.append(p | f"Read {i}" >> beam.io.ReadFromParquet(f["path"]))
            else:
                reads.append(p | f"Read {i}" >> beam.io.ReadFromText(f["path"])
                             | f"Parse {i}" >> beam.Map(json.loads))
        _ = (
            reads
            | "Flatten" >> beam.Flatten()
            | "Preprocess" >> beam.Map(lambda d: (d["id"], preprocess_text(d["text"], cfg)))
            | "RunInference" >> RunInference(handler)
            | "Format" >> beam.Map(fmt)
            | "Write" >> beam.io.WriteToText(os.path.join(out_dir, "predictions"),
                                              file_name_suffix=".jsonl")
        )
    return sum(1 for _ in iter_beam_output(out_dir))


def iter_beam_output(out_dir: str) -> Iterator[dict[str, Any]]:
    for name in sorted(os.listdir(out_dir)):
        if name.startswith("predictions") and name.endswith(".jsonl"):
            with open(os.path.join(out_dir, name), encoding="utf-8") as fh:
                for line in fh:
                    if line.strip():
                        yield json.loads(line)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("kind", choices=("plain", "pool", "beam"))
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args(argv)
    manifest = load_manifest(args.manifest)
    os.makedirs(args.out, exist_ok=True)
    started = time.monotonic()
    if args.kind == "plain":
        n = run_plain(manifest, args.out)
    elif args.kind == "pool":
        n = run_pool(manifest, args.out, args.workers)
    else:
        n = run_beam(manifest, args.out, args.workers)
    summary = {"kind": args.kind, "workers": args.workers, "scored": n,
               "seconds": round(time.monotonic() - started, 3)}
    with open(os.path.join(args.out, "summary.json"), "w", encoding="utf-8") as fh:
        json.dump(summary, fh)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
