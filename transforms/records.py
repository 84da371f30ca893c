"""The pipeline's vocabulary: output tags, DocBatch and its columns, lineage, dead letters.

``DocBatch``: a batch of documents of one tranche, as a pandas DataFrame, so every
stage after the read runs vectorised and Beam moves one object per few thousand
documents instead of one per document. A batch may hold the records of several files
(a read task packs a tranche's small files, ``landing.chunks``): each row names its
own in the ``source_file`` column, and (source file, position) is a record's key in
the tranche. The column holds one string object per file, repeated, so that a batch
pickles each file's name once. ``batch_key`` is deterministic (the read task's first
file and chunk, the batch's index in the task), which makes every output keyed by it
idempotent under Beam retries and operator reruns.

PCollections of DocBatch are typed (``with_output_types(DocBatch)``) so that Beam uses
``DocBatchCoder``: pickle for the bytes, but a size estimate from the first rows
instead of pickling the whole frame each time Beam samples an element's size (the
first ten elements of every step's output on every worker, then ever fewer).
``BatchStats`` gets the same (``BatchStatsCoder``) wherever a PCollection carries it.

Dead letters are plain dicts (rare, JSON-ready) built by ``dead_letter``. Every step
that rejects records emits them on its ``DEAD_LETTERS`` output, and every step that
counts emits ``(tranche, counts)`` on ``STATS``.

Every record must be able to travel between stages (Beam pickles elements between and
inside stages, for size estimates too) and be stored as UTF-8 text at the end:
``impassable`` finds, at read, the records of a batch that could not, so that each is
dead-lettered alone instead of failing its batch, its tranche and every rerun. A batch
of records holding only scalars costs one pass over its strings and field names (all
valid Unicode: no lone surrogate); a record with nested values passes when it nests at
most ``MAX_NESTING`` levels, holds only valid Unicode and pickles. ``dead_letter``
makes every dead letter storable whatever it was made of.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from itertools import chain
from typing import Any

import apache_beam as beam
import pandas as pd

from landing.reading import encodes, safe_text
from store.database import Fence
from tracking.profile import BatchStats, label_texts

# Tagged outputs of the pipeline's steps.
STATS = "stats"
DEAD_LETTERS = "dead_letters"
# Columns of DocBatch.frame as read, then the three that scoring adds.
DOC_ID, TEXT, LABEL, SOURCE, POSITION, METADATA, RAW = (
    "doc_id", "text", "true_label", "source_file", "position", "metadata", "raw",
)
PRED_LABEL, PRED_SCORE, PRED_TOP_K = "pred_label", "pred_score", "pred_top_k"
STAGES = ("read", "validate", "preprocess", "inference", "sink", "dedupe")


MAX_NESTING = 100  # levels of nested objects/arrays a record may have (itself is 1)
_CONTAINERS = (dict, list)

_FIELD = "^[A-Za-z_][A-Za-z0-9_.-]*$"  # a field name, as a Flex Template parameter


@dataclass(frozen=True)
class FieldNames:
    """Names of the input fields: the document id, its text, an optional true label, and
    extra fields carried to the outputs' ``metadata`` column as JSON."""

    id: str = field(default="id", metadata={
        "help": "input field holding the document id (default: the model's)",
        "label": "Id field", "regex": _FIELD, "nonempty": True})
    text: str = field(default="text", metadata={
        "help": "input field holding the text (default: the model's)",
        "label": "Text field", "regex": _FIELD, "nonempty": True})
    label: str = field(default="label", metadata={
        "help": "input field holding a true label, if any (default: the model's)",
        "label": "Label field", "regex": _FIELD, "nonempty": True})
    metadata: list[str] = field(default_factory=list, metadata={
        "help": "input fields carried to the outputs' metadata column",
        "label": "Metadata fields (comma-separated)", "nonempty": True,
        "regex": "^[A-Za-z_][A-Za-z0-9_.-]*(,[A-Za-z_][A-Za-z0-9_.-]*)*$"})


@dataclass(frozen=True)
class RunContext:
    """Lineage stamped on every output row, and the fencing tokens of the run's leases
    (tranche, token) that every database write is checked against."""

    run_id: str
    model_name: str
    model_version: str
    model_sha256: str
    scored_at: str
    fences: tuple[tuple[str, int], ...] = ()

    def fence(self) -> Fence | None:
        """What the run's writes are fenced by (None: unfenced, e.g. a test's sink)."""
        if not self.fences:
            return None
        return Fence(self.run_id, self.model_name, self.model_version, dict(self.fences))


@dataclass(frozen=True)
class DocBatch:
    """Documents of one tranche (``frame``: one row each, its ``SOURCE`` file and
    ``POSITION`` in it among the columns), under a deterministic ``batch_key``."""

    tranche: str
    batch_key: str
    frame: pd.DataFrame

    def __len__(self) -> int:
        return len(self.frame)

    def with_frame(self, frame: pd.DataFrame) -> DocBatch:
        return replace(self, frame=frame)

    def estimated_bytes(self, sample_rows: int = 16) -> int:
        """Pickled size, estimated from the first ``sample_rows`` rows and scaled to the
        batch: strings by length, dicts (raw records) by their string values, anything
        else 8 bytes; a source file's name counts once (pickle stores the repeated
        object once), then 8 bytes a row. Strings shared between columns count once per
        column, so this leans high; it is a metric, not an allocation."""
        f = self.frame
        n_head = min(len(f), sample_rows)
        sampled = 0
        for name, series in f.items():
            head = series.to_numpy()[:n_head].tolist()
            if name == SOURCE:
                sampled += 8 * len(head)
                continue
            for v in head:
                if isinstance(v, (str, bytes)):
                    sampled += len(v) + 8
                elif isinstance(v, dict):
                    sampled += sum(len(x) + 16 if isinstance(x, str) else 16 for x in v.values())
                else:
                    sampled += 8
        scaled = sampled * len(f) // max(1, n_head)
        files = sum(map(len, set(f[SOURCE].tolist()))) if SOURCE in f else 0
        return 200 + len(self.tranche) + len(self.batch_key) + files + scaled


class _EstimatingPickleCoder(beam.coders.Coder):
    """Pickle, with the size estimate the value gives itself (``estimated_bytes``)
    instead of Beam's default of pickling the value to measure it."""

    value_type: type

    def encode(self, value: Any) -> bytes:
        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)

    def decode(self, encoded: bytes) -> Any:
        return pickle.loads(encoded)

    def estimate_size(self, value: Any) -> int:
        return int(value.estimated_bytes())

    def is_deterministic(self) -> bool:
        return False

    def to_type_hint(self) -> type:
        return self.value_type


class DocBatchCoder(_EstimatingPickleCoder):
    """The coder of ``DocBatch`` (see the module docstring)."""

    value_type = DocBatch


class BatchStatsCoder(_EstimatingPickleCoder):
    """The coder of a scored batch's ``BatchStats`` (arrays and out-of-vocabulary tokens)."""

    value_type = BatchStats


beam.coders.registry.register_coder(DocBatch, DocBatchCoder)
beam.coders.registry.register_coder(BatchStats, BatchStatsCoder)


def impassable(records: Sequence[dict[str, Any]]) -> dict[int, str]:
    """Index -> reason of every record that cannot be passed on: a field name or string
    value, at any depth, that is not valid Unicode (``unicode_flaw``), nested deeper
    than ``MAX_NESTING`` levels, or not picklable. A batch of flat records (the common
    case) costs one pass over its values and one over its field names, in C."""
    values = list(chain.from_iterable(map(dict.values, records)))
    nested = bool({dict, list} & set(map(type, values)))
    found = {}
    if nested:
        for i, record in enumerate(records):
            if any(type(v) in _CONTAINERS for v in record.values()):
                reason = _impassable(record)
                if reason:
                    found[i] = reason
    if not (_valid_text(values) and _valid_text(list(chain.from_iterable(records)))):
        for i, record in enumerate(records):
            if i not in found:
                flaw = unicode_flaw(record, depth=1)
                if flaw:
                    found[i] = flaw
    return found


def _valid_text(items: list[Any]) -> bool:
    """Whether every string among ``items`` is valid Unicode (encodes as UTF-8)."""
    try:
        text = "".join(items)
    except TypeError:  # not only strings
        text = "".join([v for v in items if type(v) is str])
    return encodes(text)


_NOT_UNICODE = ("is not valid Unicode (a lone surrogate: an undecodable byte or an unpaired "
                "\\ud800-\\udfff escape)")


def unicode_flaw(value: Any, depth: int = MAX_NESTING + 1) -> str:
    """Why ``value`` cannot be stored as text ('' when it can): the first field name or
    string, within ``depth`` levels of dicts and lists, holding a lone surrogate (an
    undecodable byte of a CSV file, an unpaired ``\\ud800``-``\\udfff`` escape of a
    JSON line), which no UTF-8 database, Parquet file or JSON line can hold. The reason
    names it by its path in the record (``field 'meta.tags[1]'``)."""
    stack: list[tuple[Any, str, int]] = [(value, "", 0)]
    while stack:
        v, path, level = stack.pop()
        if type(v) is str:
            if not encodes(v):
                return f"{_field(path)} {_NOT_UNICODE}"
        elif type(v) in _CONTAINERS and level < depth:
            items = list(v.items() if type(v) is dict else enumerate(v))
            for k, item in reversed(items):
                step = f"[{k}]" if type(k) is int else f".{safe_text(str(k))}"
                if type(k) is str and not encodes(k):
                    return f"{_field(path + step, 'field name')} {_NOT_UNICODE}"
                stack.append((item, path + step, level + 1))
    return ""


def _field(path: str, what: str = "field") -> str:
    return f"{what} '{path.removeprefix('.')}'" if path else "the value"


def _impassable(record: dict[str, Any]) -> str:
    if nesting(record, MAX_NESTING) > MAX_NESTING:
        return (f"record nested deeper than {MAX_NESTING} levels: cannot be passed "
                "between pipeline stages")
    flaw = unicode_flaw(record)
    if flaw:
        return flaw
    try:
        pickle.dumps(record, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:  # noqa: BLE001 - whatever stops it, the record is isolated
        return f"record cannot be passed between pipeline stages: {type(exc).__name__}: {exc}"
    return ""


def nesting(value: Any, limit: int) -> int:
    """Levels of nested dicts/lists in ``value`` (a scalar is 0), counted without
    recursion and at most to ``limit + 1``."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if type(v) not in _CONTAINERS:
            continue
        if depth > limit:
            return depth
        deepest = max(deepest, depth)
        stack.extend((c, depth + 1) for c in (v.values() if type(v) is dict else v))
    return deepest


def truncate_payload(raw: Any, limit: int) -> str:
    """The raw record as text of at most ``limit`` characters (then a marker), NUL
    characters written as ``\x00`` (PostgreSQL text cannot hold them)."""
    if raw is None:
        return ""
    if isinstance(raw, bytes):
        text = raw.decode("utf-8", errors="replace")
    elif isinstance(raw, str):
        text = raw
    else:
        try:
            text = json.dumps(raw, ensure_ascii=False, default=str)
        except (TypeError, ValueError):
            text = repr(raw)
        except RecursionError:
            text = "(not stored: nested too deeply to write as text)"
    text = safe_text(text if len(text) <= limit else text[:limit] + "…[truncated]")
    return text.replace("\x00", "\\x00") if "\x00" in text else text


def dead_letter(
    *,
    tranche: str,
    source_file: str,
    position: int,
    stage: str,
    reason: str,
    payload: Any,
    payload_limit: int,
) -> dict[str, Any]:
    """One rejected record. ``position`` is the 1-based line or row; 0 = whole file."""
    assert stage in STAGES, stage
    return {
        "tranche": tranche,
        "source_file": safe_text(source_file),
        "position": int(position),
        "stage": stage,
        "reason": safe_text(reason).replace("\x00", "\\x00"),
        "payload": truncate_payload(payload, payload_limit),
    }


def dead_letters_from_frame(
    batch: DocBatch, frame: pd.DataFrame, stage: str, reasons: Any, payload_limit: int
) -> list[dict[str, Any]]:
    """Dead letters for the rows of ``frame`` (a slice of ``batch.frame``), each naming
    its row's file and position."""
    return [
        dead_letter(
            tranche=batch.tranche,
            source_file=source,
            position=pos,
            stage=stage,
            reason=str(reason),
            payload=raw,
            payload_limit=payload_limit,
        )
        for source, pos, raw, reason in zip(frame[SOURCE], frame[POSITION], frame[RAW], reasons)
    ]


def prediction_columns(batch: DocBatch, ctx: RunContext) -> dict[str, list[Any]]:
    """The ``predictions`` row of every scored document, by column name: the database
    sink and the Parquet files both take their columns from here."""
    f = batch.frame
    n = len(f)
    return {
        "doc_id": f[DOC_ID].tolist(), "tranche": [batch.tranche] * n,
        "label": f[PRED_LABEL].tolist(), "score": f[PRED_SCORE].astype(float).tolist(),
        "top_k": f[PRED_TOP_K].tolist(), "model_name": [ctx.model_name] * n,
        "model_version": [ctx.model_version] * n, "model_sha256": [ctx.model_sha256] * n,
        "run_id": [ctx.run_id] * n, "scored_at": [ctx.scored_at] * n,
        "source_file": f[SOURCE].tolist(), "position": f[POSITION].tolist(),
        "metadata": f[METADATA].tolist(),
    }


def true_labels(batch: DocBatch) -> list[str | None]:
    """The input's label of every document as a string, None where it has none
    (``has_label``)."""
    labels = batch.frame[LABEL].tolist()
    return [None if v is None or v != v or not text.strip() else text
            for v, text in zip(labels, label_texts(labels))]
