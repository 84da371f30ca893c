"""``beamscore train``: fit the default recipe on labelled documents and register it.

Reads JSONL(.gz), Parquet or CSV files matching a glob (local or gs://), applies the
configured preprocessing, fits ``models.recipe`` with a held-out evaluation, and
registers the model with its preprocessing and metrics in the metadata, so scoring
applies exactly the preprocessing it was trained with.
"""

from __future__ import annotations

import io
import json
import logging

import pandas as pd
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from landing.tranches import file_format
from models.preprocess import preprocess_texts
from models.recipe import train_and_evaluate
from models.registry import ModelRef, ModelRegistry
from pipelines.config import Config

_LOG = logging.getLogger(__name__)


def read_labelled(glob: str, text_field: str, label_field: str) -> pd.DataFrame:
    """All (text, label) pairs with a non-empty string text and a present label."""
    paths = sorted(m.path for m in FileSystems.match([glob])[0].metadata_list)
    if not paths:
        raise FileNotFoundError(f"no files match {glob}")
    frames = []
    for path in paths:
        fmt = file_format(path)
        if fmt is None:
            continue
        compression = CompressionTypes.GZIP if fmt == "jsonl.gz" else CompressionTypes.UNCOMPRESSED
        with FileSystems.open(path, compression_type=compression) as fh:
            data = fh.read()
        if fmt == "parquet":
            df = pd.read_parquet(io.BytesIO(data))
        elif fmt == "csv":
            df = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False)
        else:
            rows = []
            for line in data.splitlines():
                try:
                    obj = json.loads(line)
                except ValueError:
                    continue
                if isinstance(obj, dict):
                    rows.append(obj)
            df = pd.DataFrame(rows)
        if text_field not in df or label_field not in df:
            _LOG.warning("%s has no %r/%r columns; skipped", path, text_field, label_field)
            continue
        frames.append(df[[text_field, label_field]].rename(
            columns={text_field: "text", label_field: "label"}))
    if not frames:
        raise ValueError(f"no usable labelled records in {glob}")
    df = pd.concat(frames, ignore_index=True)
    keep = df["text"].map(lambda v: isinstance(v, str) and bool(v.strip())) & df["label"].notna()
    df = df[keep]
    df = df.assign(label=df["label"].astype(str))
    return df[df["label"].str.len() > 0].reset_index(drop=True)


def train(cfg: Config, docs_glob: str, name: str) -> ModelRef:
    df = read_labelled(docs_glob, cfg.fields.text, cfg.fields.label)
    texts = preprocess_texts(df["text"].tolist(), cfg.preprocessing)
    model, metrics = train_and_evaluate(texts, df["label"].tolist())
    _LOG.info("trained on %d documents: %s", len(texts), metrics)
    return ModelRegistry(cfg.registry).register(
        name, model, preprocessing=cfg.preprocessing.to_dict(), source=f"train:{docs_glob}",
        metrics=metrics,
        extra={"text_field": cfg.fields.text, "label_field": cfg.fields.label,
               "recipe": "tfidf-1-2gram+logistic-regression"},
    )
