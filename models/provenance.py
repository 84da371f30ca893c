"""What a model was trained on: content hashes of its training texts, and its metrics.

``beamscore train`` stores in the artifact (attribute ``TRAINING_ATTRIBUTE`` of the
fitted pipeline, a dict of numpy arrays and numbers, so it travels with the file and
loads under the restricted unpickler) a sorted array of 64-bit hashes of its training
texts, the share of those texts that occur more than once, and its cross-fitted
accuracy. A reference profile must describe the model on documents it did not see:
``check_reference`` refuses reference documents that overlap the training set more
than held-out documents of the same source would (duplicates within a corpus make a
few overlaps normal), and ``in_sample_warning`` says when a reference's accuracy is far
above the model's held-out accuracy (or, without a recorded one, implausibly high).
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import numpy as np

TRAINING_ATTRIBUTE = "beamscore_training_"
MARGIN = 0.05  # overlap share above the expected one that is refused, at least
IMPLAUSIBLE_ACCURACY = 0.99  # without a recorded accuracy: a reference this good is suspect


class ReferenceOverlapError(ValueError):
    """The reference documents are (largely) the model's own training documents."""


def _hash(text: str) -> int:
    normal = " ".join(text.split()).casefold().encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.blake2b(normal, digest_size=8).digest(), "little")


def text_hashes(texts: list[str]) -> np.ndarray:
    """64-bit hashes of ``texts``, whitespace and case folded, one per text."""
    return np.fromiter((_hash(t) for t in texts), dtype=np.uint64, count=len(texts))


def training_record(texts: list[str], metrics: dict[str, Any]) -> dict[str, Any]:
    """What ``beamscore train`` stores in the artifact about its training set."""
    hashes = text_hashes(texts)
    unique, counts = np.unique(hashes, return_counts=True)
    repeated = float(counts[counts > 1].sum() / max(1, len(hashes)))
    return {"text_hashes": unique, "repeated_share": round(repeated, 6),
            "n_documents": len(texts), "accuracy": metrics.get("accuracy")}


def record_of(model: Any) -> dict[str, Any] | None:
    record = getattr(model, TRAINING_ATTRIBUTE, None)
    return record if isinstance(record, dict) and "text_hashes" in record else None


def overlap(record: dict[str, Any], texts: list[str]) -> np.ndarray:
    """Per text: whether it is one of the training texts."""
    known = np.asarray(record["text_hashes"], dtype=np.uint64)
    return np.isin(text_hashes(texts), known, assume_unique=False)


def check_reference(model: Any, texts: list[str]) -> int:
    """How many of ``texts`` the model was trained on; ``ReferenceOverlapError`` when
    more than held-out documents would share with the training set by chance. A
    model without a training record (not made by ``beamscore train``) gives 0."""
    record = record_of(model)
    if record is None or not texts:
        return 0
    seen = int(overlap(record, texts).sum())
    share, expected = seen / len(texts), float(record.get("repeated_share", 0.0))
    allowed = expected + max(MARGIN, 3 * math.sqrt(max(expected, 0.01) / len(texts)))
    if share > allowed:
        raise ReferenceOverlapError(
            f"{seen} of {len(texts)} reference documents ({share:.1%}) are in the model's "
            f"training set (documents held out from the same source would share about "
            f"{expected:.1%}): a reference must be documents the model was not trained on; "
            "use held-out documents, or omit --reference")
    return seen


def in_sample_warning(model: Any, accuracy: float | None, n: int) -> str | None:
    """A warning when a labelled reference's ``accuracy`` (on ``n`` documents) looks
    in-sample: far above the model's recorded held-out accuracy, or, without one,
    above ``IMPLAUSIBLE_ACCURACY``."""
    if accuracy is None or n <= 0:
        return None
    record = record_of(model)
    recorded = record.get("accuracy") if record else None
    if isinstance(recorded, (int, float)):
        margin = max(MARGIN, 3 * math.sqrt(max(recorded * (1 - recorded), 1e-4) / n))
        if accuracy <= recorded + margin:
            return None
        basis = f"far above the model's held-out accuracy {recorded:.3f}"
    elif accuracy < IMPLAUSIBLE_ACCURACY:
        return None
    else:
        basis = "higher than a held-out accuracy usually is"
    return (f"reference accuracy {accuracy:.3f} on {n} documents is {basis}: the reference "
            "looks like documents the model was trained on, and tracking would then report "
            "accuracy drops on every run; use documents the model has not seen")
