"""``beamscore train``: fit the default recipe on labelled documents and register it.

Reads the input formats of ``landing.formats`` matching a glob, local or gs://, with
the same record readers as scoring; a line or row that is not a usable
labelled record (undecodable, malformed, no text, no label) is skipped and reported
with its file and line, and the number skipped is logged. Applies the configured
preprocessing, cross-fits ``models.recipe`` (K folds for out-of-fold metrics and the
reference profile, a final fit on everything that scores), and registers the model
with its preprocessing, field names and metrics in the metadata, so scoring applies
exactly the preprocessing it was trained with and reads the same fields. Each stage
(read, each fold, final fit, reference, register) logs a line with its duration.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from apache_beam.io.filesystems import FileSystems

from landing.formats import Rejection, file_format, format_names, read_chunk
from landing.reading import Chunk
from models.behaviour import PROFILE_FILE, reference_files
from models.preprocess import PreprocessConfig, preprocess_texts
from models.provenance import (
    TRAINING_ATTRIBUTE,
    check_reference,
    in_sample_warning,
    training_record,
)
from models.recipe import RECIPE, train_cross_fitted
from models.registry import ModelRef, ModelRegistry, check_name
from tracking.profile import has_label, label_text
from transforms.records import FieldNames

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
            elif require_label and not has_label(label):
                out.skip(where, f"no label in field {label_field!r}")
            else:
                out.texts.append(text)
                out.labels.append(label_text(label) if has_label(label) else "")
    if out.skipped:
        _LOG.warning("skipped %d line(s) or row(s) of %s that are not labelled records",
                     len(out.skipped), glob)
    if not out.texts:
        raise ValueError(f"no usable labelled records in {glob} (fields {text_field!r}, "
                         f"{label_field!r}; {len(out.skipped)} skipped)")
    return out


def train(registry: str, fields: FieldNames, preprocessing: PreprocessConfig,
          docs_glob: str, name: str) -> ModelRef:
    """Read ``fields`` of ``docs_glob``, apply ``preprocessing``, cross-fit
    (``models.recipe``), profile and register in ``registry``; one progress line per
    stage. The reference profile is the out-of-fold scores of every training document,
    with the cross-fitted metrics; the artifact records its training texts' hashes."""
    check_name(name)  # before minutes of training, not after
    started = time.perf_counter()
    data = read_labelled(docs_glob, fields.text, fields.label)
    texts = preprocess_texts(data.texts, preprocessing)
    _LOG.info("read %d labelled documents of %d classes (%d skipped): %.1f s", len(texts),
              len(set(data.labels)), len(data.skipped), time.perf_counter() - started)
    fit = train_cross_fitted(texts, data.labels)
    metrics = fit.metrics | {"skipped_records": len(data.skipped)}
    setattr(fit.model, TRAINING_ATTRIBUTE, training_record(data.texts, metrics))
    _LOG.info("cross-fitted accuracy %.4f, macro-F1 %.4f over %d folds",
              metrics["accuracy"], metrics["macro_f1"], metrics["folds"])
    stage = time.perf_counter()
    empty = sum(1 for t in texts if not t) / max(1, len(texts))
    files = reference_files(fit.model, texts, data.labels, metrics, empty,
                            held_out=fit.held_out)
    _LOG.info("reference profile of %d out-of-fold documents: %.1f s", len(texts),
              time.perf_counter() - stage)
    stage = time.perf_counter()
    ref = ModelRegistry(registry).register(
        name, fit.model, preprocessing=preprocessing.to_dict(), source=f"train:{docs_glob}",
        metrics=metrics,
        extra={"id_field": fields.id, "text_field": fields.text,
               "label_field": fields.label, "recipe": RECIPE},
        files=files,
    )
    _LOG.info("registered %s:%s: %.1f s (%.1f s in all)", ref.name, ref.version,
              time.perf_counter() - stage, time.perf_counter() - started)
    return ref


def reference_from_glob(fields: FieldNames, preprocessing: PreprocessConfig, glob: str
                        ) -> Callable[[Any], dict[str, bytes]]:
    """``models register --reference GLOB``: the documents (labelled or not) that a
    registered model's reference profile is made of, prepared as scoring prepares them.
    They must be documents the model did not see: for a model made by ``beamscore
    train``, a reference that overlaps its training set is refused; a labelled reference
    whose accuracy looks in-sample is warned about."""
    data = read_labelled(glob, fields.text, fields.label, require_label=False)
    texts = preprocess_texts(data.texts, preprocessing)
    unlabelled = sum(1 for label in data.labels if not label)
    labels = data.labels if unlabelled < len(data.labels) else None
    if labels is not None and unlabelled:
        _LOG.warning("%d of %d reference documents have no label: accuracy is measured on "
                     "the %d that have one", unlabelled, len(texts), len(texts) - unlabelled)
    empty = sum(1 for t in texts if not t) / max(1, len(texts))

    def files(model: Any) -> dict[str, bytes]:
        seen = check_reference(model, data.texts)
        if seen:
            _LOG.info("%d of %d reference documents are also training documents (as many "
                      "as held-out documents of the same source share)", seen, len(texts))
        made = reference_files(model, texts, labels, None, empty)
        reference = json.loads(made[PROFILE_FILE]).get("reference", {})
        warning = in_sample_warning(model, reference.get("accuracy"),
                                    len(texts) - unlabelled)
        if warning:
            _LOG.warning("%s", warning)
        return made

    return files
