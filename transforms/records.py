"""The two element types that flow through the scoring pipeline.

``DocBatch``: a batch of documents from one source file, as a pandas DataFrame, so
every stage after the read runs vectorised and Beam moves one object per few thousand
documents instead of one per document. ``batch_key`` is deterministic (file, chunk,
batch index), which makes every output keyed by it idempotent under Beam retries and
operator reruns.

Dead letters are plain dicts (rare, JSON-ready) built by ``dead_letter``.

PCollections of DocBatch are typed (``with_output_types(DocBatch)``) so that Beam uses
``DocBatchCoder``: pickle for the bytes, but a size estimate from the first rows
instead of pickling the whole frame each time Beam samples an element's size (with
untyped PCollections that sampling took ~7% of a run's CPU).
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass, replace
from typing import Any

import apache_beam as beam
import pandas as pd

# Columns of DocBatch.frame.
DOC_ID, TEXT, LABEL, POSITION, METADATA, RAW = (
    "doc_id", "text", "true_label", "position", "metadata", "raw",
)
DEAD_LETTER_FIELDS = ("tranche", "source_file", "position", "stage", "reason", "payload")
STAGES = ("read", "validate", "preprocess", "inference", "sink")


@dataclass(frozen=True)
class DocBatch:
    tranche: str
    source_file: str
    batch_key: str
    frame: pd.DataFrame

    def __len__(self) -> int:
        return len(self.frame)

    def with_frame(self, frame: pd.DataFrame) -> DocBatch:
        return replace(self, frame=frame)

    def estimated_bytes(self, sample_rows: int = 16) -> int:
        """Pickled size, estimated from the first ``sample_rows`` rows and scaled to the
        batch: strings by length, dicts (raw records) by their string values, anything
        else 8 bytes. Strings shared between columns count once per column (pickle
        stores them once), so this leans high; it is a metric, not an allocation."""
        f = self.frame
        n_head = min(len(f), sample_rows)
        sampled = 0
        for _, series in f.items():
            for v in series.to_numpy()[:n_head].tolist():
                if isinstance(v, (str, bytes)):
                    sampled += len(v) + 8
                elif isinstance(v, dict):
                    sampled += sum(len(x) + 16 if isinstance(x, str) else 16 for x in v.values())
                else:
                    sampled += 8
        scaled = sampled * len(f) // max(1, n_head)
        return 200 + len(self.tranche) + len(self.source_file) + len(self.batch_key) + scaled


class DocBatchCoder(beam.coders.Coder):
    """Pickle, with a cheap size estimate (see the module docstring)."""

    def encode(self, value: DocBatch) -> bytes:
        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)

    def decode(self, encoded: bytes) -> DocBatch:
        value: DocBatch = pickle.loads(encoded)
        return value

    def estimate_size(self, value: DocBatch) -> int:
        return value.estimated_bytes()

    def is_deterministic(self) -> bool:
        return False

    def to_type_hint(self) -> type:
        return DocBatch


beam.coders.registry.register_coder(DocBatch, DocBatchCoder)


def truncate_payload(raw: Any, limit: int) -> str:
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
    return text if len(text) <= limit else text[:limit] + "…[truncated]"


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
        "source_file": source_file,
        "position": int(position),
        "stage": stage,
        "reason": reason,
        "payload": truncate_payload(payload, payload_limit),
    }


def dead_letters_from_frame(
    batch: DocBatch, frame: pd.DataFrame, stage: str, reasons: Any, payload_limit: int
) -> list[dict[str, Any]]:
    """Dead letters for the rows of ``frame`` (a slice of ``batch.frame``)."""
    return [
        dead_letter(
            tranche=batch.tranche,
            source_file=batch.source_file,
            position=pos,
            stage=stage,
            reason=str(reason),
            payload=raw,
            payload_limit=payload_limit,
        )
        for pos, raw, reason in zip(frame[POSITION], frame[RAW], reasons)
    ]
