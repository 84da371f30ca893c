"""``beamscore train``: fit the default recipe on labelled documents and register it.

Reads the input formats of ``landing.formats`` matching a glob, local or gs://, with
the same record readers as scoring; a line or row that is not a usable
labelled record (undecodable, malformed, no text, no label) is skipped and reported
with its file and line, and the number skipped is logged. Applies the configured
preprocessing, fits ``models.recipe`` with a held-out evaluation, and registers the
model with its preprocessing, field names and metrics in the metadata, so scoring
applies exactly the preprocessing it was trained with and reads the same fields.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from apache_beam.io.filesystems import FileSystems

from landing.formats import Rejection, file_format, format_names, read_chunk
from landing.reading import Chunk
from models.behaviour import reference_files
from models.preprocess import preprocess_texts
from models.recipe import train_evaluate_hold_out
from models.registry import ModelRef, ModelRegistry
from pipelines.configuration.config import Config

_LOG = logging.getLogger(__name__)
_SHOWN = 10  # skipped lines named one by one in the log, per run


@dataclass
class Labelled:
    texts: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # "file:line: why"

    def skip(self, where: str, why: str) -> None:
        if len(self.skipped) < _SHOWN:
            _LOG.warning("%s: skipped: %s", where, why)
        self.skipped.append(f"{where}: {why}")


def read_labelled(glob: str, text_field: str, label_field: str,
                  require_label: bool = True) -> Labelled:
    """Every record with a non-empty string text and a label (or, without
    ``require_label``, with or without one: "" then), from the files of ``glob``."""
    paths = sorted(m.path for m in FileSystems.match([glob])[0].metadata_list)
    if not paths:
        raise FileNotFoundError(f"no files match {glob}")
    out = Labelled()
    for path in paths:
        fmt = file_format(path)
        if fmt is None:
            _LOG.warning("%s: not a %s file; ignored", path, format_names())
            continue
        for item, position in read_chunk(Chunk("", path, fmt)):
            where = f"{path}:{position}"
            if isinstance(item, Rejection):
                out.skip(where, item.reason)
                continue
            text, label = item.get(text_field), item.get(label_field)
            if not isinstance(text, str) or not text.strip():
                out.skip(where, f"no text in field {text_field!r}")
            elif require_label and (label is None or str(label) == ""):
                out.skip(where, f"no label in field {label_field!r}")
            else:
                out.texts.append(text)
                out.labels.append("" if label is None else str(label))
    if out.skipped:
        _LOG.warning("skipped %d line(s) or row(s) of %s that are not labelled records",
                     len(out.skipped), glob)
    if not out.texts:
        raise ValueError(f"no usable labelled records in {glob} (fields {text_field!r}, "
                         f"{label_field!r}; {len(out.skipped)} skipped)")
    return out


def train(cfg: Config, docs_glob: str, name: str) -> ModelRef:
    """Fit, evaluate on the held-out split and register the model with its reference
    profile (the held-out split scored by the final model, with the split's metrics)."""
    data = read_labelled(docs_glob, cfg.fields.text, cfg.fields.label)
    texts = preprocess_texts(data.texts, cfg.preprocessing)
    model, metrics, (split_model, held_texts, held_labels) = train_evaluate_hold_out(
        texts, data.labels)
    metrics["skipped_records"] = len(data.skipped)
    _LOG.info("trained on %d documents: %s", len(texts), metrics)
    empty = sum(1 for t in texts if not t) / max(1, len(texts))
    return ModelRegistry(cfg.registry).register(
        name, model, preprocessing=cfg.preprocessing.to_dict(), source=f"train:{docs_glob}",
        metrics=metrics,
        extra={"id_field": cfg.fields.id, "text_field": cfg.fields.text,
               "label_field": cfg.fields.label, "recipe": "tfidf-1-2gram+logistic-regression"},
        files=reference_files(model, held_texts, held_labels, metrics, empty, split_model),
    )


def reference_from_glob(cfg: Config, glob: str) -> Callable[[Any], dict[str, bytes]]:
    """``models register --reference GLOB``: the documents (labelled or not) that a
    registered model's reference profile is made of, prepared as scoring prepares them."""
    data = read_labelled(glob, cfg.fields.text, cfg.fields.label, require_label=False)
    texts = preprocess_texts(data.texts, cfg.preprocessing)
    labels = data.labels if all(data.labels) else None
    empty = sum(1 for t in texts if not t) / max(1, len(texts))
    return lambda model: reference_files(model, texts, labels, None, empty)
