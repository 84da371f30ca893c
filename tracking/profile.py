"""The profile of scored data: what a tranche (or a model's reference set) looks like.

A ``Profile`` holds counts, sums and quantile sketches only, never rows: predicted
class counts, the score (top probability) overall and per predicted class, text
length and token count, out-of-vocabulary tokens (their number, and the most frequent
ones by documents with example ids, ``tracking.oov``), the confusion counts of the records
that carry a true label (and, by predicted class, of those whose label is none of the
model's classes), records and labelled records and correct ones per score bin (the
reference's calibrate the label-free accuracy estimate), and the sum of per-feature
importance contributions over the rows that contributed them (``models.importance``).
Profiles of batches merge into the profile of a tranche, on any worker, in any order.
``BatchStats`` is what one scored batch contributes. A profile serialises to JSON for the
model registry.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tracking.oov import OovTokens
from tracking.sketch import Sketch

UNKNOWN_LABEL = -2  # BatchStats.true of a label that is none of the model's classes
SCORE_BINS = 20  # equal-width bins of the top probability, for the calibrated estimate
# "3.0" (the text of the float 3.0) or "+3": a whole number written another way
_WHOLE_NUMBER = re.compile(r"(\+)?(-?[0-9]+)(\.0+)?")
_BOOLEANS = {"true": "true", "false": "false"}


def label_text(value: Any) -> str:
    """A label as the text it is compared by, whatever its type or format: 3, 3.0, "3",
    "3.0" (how a CSV file, or pandas, writes a whole number of a column with gaps) and
    "+3" are "3"; true, "True" (how Python's csv and pandas write a boolean) and "TRUE"
    are "true"; text is compared without the blanks around it ("billing " is
    "billing")."""
    return _label(value, _text)


def legacy_label_text(value: Any) -> str:
    """``label_text`` as models trained before booleans written as text, "+3" and the
    blanks around a label were read as one label had their labels read: numbers written
    as whole floats aside, text as it is (``label_reader``)."""
    return _label(value, _legacy_text)


def _label(value: Any, text_of: Callable[[str], str]) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if hasattr(value, "item") and not isinstance(value, str):  # numpy scalars
        return _label(value.item(), text_of)
    return text_of(value) if isinstance(value, str) else str(value)


def _text(value: str) -> str:
    text = value.strip()
    whole = _WHOLE_NUMBER.fullmatch(text)
    if whole and (whole[1] or whole[3]):
        return str(int(whole[2]))
    return _BOOLEANS.get(text.lower(), text)


_LEGACY_WHOLE_NUMBER = re.compile(r"([+-]?[0-9]+)\.0+")


def _legacy_text(value: str) -> str:
    whole = _LEGACY_WHOLE_NUMBER.fullmatch(value)
    return str(int(whole[1])) if whole else value


def label_reader(classes: Iterable[Any]) -> Callable[[Any], str]:
    """How the labels compared with a model's ``classes`` are read: ``label_text``,
    unless two of its classes would read the same (a model trained when "True" and
    true, or "a" and "a ", were two labels): then ``legacy_label_text``, as they were
    read when it was trained, so that every class stays itself."""
    texts = [label_text(c) for c in classes]
    return label_text if len(set(texts)) == len(texts) else legacy_label_text


def has_label(value: Any) -> bool:
    """Whether an input's label field holds a label: not missing (null, NaN) and not
    blank text. Training, references and tracking all go by it: an empty CSV cell or
    ``"label": ""`` is no label, never a class of its own."""
    if value is None or (isinstance(value, float) and value != value):
        return False
    return bool(label_text(value).strip())


def label_texts(values: Iterable[Any], read: Callable[[Any], str] = label_text) -> list[str]:
    """``label_text`` of every value, worked out once per distinct value (a batch's
    labels are a few values repeated). Only values whose type makes equal values print
    the same are shared: str, int, float, bool and numpy numbers, each type apart
    (``True == 1``, yet their texts are "true" and "1"); any other value (a Decimal, a
    date, a tuple, a list) is made text on its own."""
    known: dict[tuple[type, Any], str] = {}
    texts = []
    for value in values:
        kind = type(value)
        if kind in _PLAIN_LABELS or isinstance(value, (np.number, np.bool_)):
            key = (kind, value)
            text = known.get(key)
            if text is None:
                text = known[key] = read(value)
        else:
            text = read(value)
        texts.append(text)
    return texts


_PLAIN_LABELS = frozenset({str, int, float, bool})


def _score_bins(scores: np.ndarray) -> np.ndarray:
    return np.clip((np.asarray(scores, np.float64) * SCORE_BINS).astype(np.int64), 0,
                   SCORE_BINS - 1)


@dataclass
class BatchStats:
    """One scored batch's contribution; class indices refer to ``classes``."""

    predicted: np.ndarray  # class index of each record
    scores: np.ndarray  # top probability of each record
    lengths: np.ndarray  # characters of each (preprocessed) text
    tokens: np.ndarray  # tokens of each text
    oov: np.ndarray  # of which not in the model's vocabulary
    true: np.ndarray  # class index of the true label: -1 none (or unsampled), -2 a label
    # outside the model's classes (UNKNOWN_LABEL)
    importance: np.ndarray | None = None  # per feature: sum over importance_rows records
    importance_rows: int = 0
    importance_skipped: int = 0  # 1: the batch's importance measure ran out of time or failed
    oov_words: list[str] = field(default_factory=list)  # each out-of-vocabulary token
    oov_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # its record
    doc_ids: Any = None  # id of each record (a sequence), for example ids; None: no examples

    def problem(self, classes: int, features: int | None) -> str | None:
        """What makes these statistics impossible to add to a profile of ``classes``
        classes (and ``features`` importance columns, if it has any yet), or None."""
        n = len(self.predicted)
        sizes = {len(a) for a in (self.scores, self.lengths, self.tokens, self.oov, self.true)}
        if sizes != {n}:
            return f"arrays of {sorted(sizes | {n})} records in one batch"
        if classes and n and (self.predicted.min() < 0 or self.predicted.max() >= classes):
            return f"a predicted class outside the model's {classes}"
        if classes and n and (self.true.min() < UNKNOWN_LABEL or self.true.max() >= classes):
            return f"a true label outside the model's {classes} classes"
        if len(self.oov_rows) != len(self.oov_words):
            return "out-of-vocabulary tokens and their records do not pair up"
        if self.importance is not None and features is not None and \
                len(self.importance) != features:
            return f"importance of {len(self.importance)} features, not {features}"
        return None

    def estimated_bytes(self) -> int:
        """Pickled size, roughly: the arrays' bytes, 16 per out-of-vocabulary token and
        32 per id (a metric for Beam's element sizes, not an allocation)."""
        arrays = (self.predicted, self.scores, self.lengths, self.tokens, self.oov, self.true,
                  self.oov_rows, self.importance)
        return (240 + sum(a.nbytes for a in arrays if a is not None)
                + 16 * len(self.oov_words)
                + (0 if self.doc_ids is None else 32 * len(self.doc_ids)))


@dataclass
class Profile:
    classes: list[str]
    n: int = 0
    class_counts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    score: Sketch = field(default_factory=Sketch)
    score_by_class: list[Sketch] = field(default_factory=list)
    length: Sketch = field(default_factory=Sketch)
    tokens: Sketch = field(default_factory=Sketch)
    tokens_total: int = 0
    oov_total: int = 0
    confusion: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.int64))
    top_probability_sum: float = 0.0
    unknown_labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    score_bins: np.ndarray = field(default_factory=lambda: np.zeros(SCORE_BINS, np.int64))
    bin_labelled: np.ndarray = field(default_factory=lambda: np.zeros(SCORE_BINS, np.int64))
    bin_correct: np.ndarray = field(default_factory=lambda: np.zeros(SCORE_BINS, np.int64))
    importance_sum: np.ndarray | None = None
    importance_rows: int = 0
    importance_skipped: int = 0  # batches whose importance measure ran out of time or failed
    reference: dict[str, Any] = field(default_factory=dict)  # reference-only figures
    importance_all: np.ndarray | None = None  # a stored reference's, of every feature
    oov_tokens: OovTokens | None = field(default_factory=OovTokens)  # None: a stored
    # profile without them (nothing to compare)

    def __post_init__(self) -> None:
        k = len(self.classes)
        if self.class_counts.size != k:
            self.class_counts = np.zeros(k, np.int64)
        if len(self.score_by_class) != k:
            self.score_by_class = [Sketch() for _ in range(k)]
        if self.confusion.shape != (k, k):
            self.confusion = np.zeros((k, k), np.int64)
        if self.unknown_labels.size != k:  # by predicted class
            self.unknown_labels = np.zeros(k, np.int64)

    def add(self, b: BatchStats) -> Profile:
        """Count a batch in; ``ValueError`` (nothing counted) for statistics that do not
        fit the profile (``BatchStats.problem``)."""
        k = len(self.classes)
        features = None if self.importance_sum is None else len(self.importance_sum)
        if (why := b.problem(k, features)) is not None:
            raise ValueError(f"batch statistics that do not fit the profile: {why}")
        self.n += len(b.predicted)
        self.class_counts += np.bincount(b.predicted, minlength=k)[:k]
        self.score.update(b.scores)
        for c in np.unique(b.predicted).tolist():
            self.score_by_class[c].update(b.scores[b.predicted == c])
        self.length.update(b.lengths)
        self.tokens.update(b.tokens)
        self.tokens_total += int(b.tokens.sum())
        self.oov_total += int(b.oov.sum())
        if self.oov_tokens is not None:
            self.oov_tokens.add(b.oov_words, b.oov_rows, b.doc_ids)
        labelled = b.true >= 0
        np.add.at(self.confusion, (b.true[labelled], b.predicted[labelled]), 1)
        self.unknown_labels += np.bincount(b.predicted[b.true == UNKNOWN_LABEL],
                                           minlength=k)[:k]
        self.top_probability_sum += float(b.scores.sum())
        bins = _score_bins(b.scores)
        self.score_bins += np.bincount(bins, minlength=SCORE_BINS)
        self.bin_labelled += np.bincount(bins[labelled], minlength=SCORE_BINS)
        self.bin_correct += np.bincount(
            bins[labelled & (b.true == b.predicted)], minlength=SCORE_BINS)
        if b.importance is not None and b.importance_rows:
            self.importance_sum = (b.importance.astype(np.float64) if self.importance_sum is None
                                   else self.importance_sum + b.importance)
            self.importance_rows += b.importance_rows
        self.importance_skipped += b.importance_skipped
        return self

    def merge(self, other: Profile) -> Profile:
        self.n += other.n
        self.class_counts += other.class_counts
        self.score.merge(other.score)
        for mine, theirs in zip(self.score_by_class, other.score_by_class):
            mine.merge(theirs)
        self.length.merge(other.length)
        self.tokens.merge(other.tokens)
        self.tokens_total += other.tokens_total
        self.oov_total += other.oov_total
        if self.oov_tokens is not None and other.oov_tokens is not None:
            self.oov_tokens.merge(other.oov_tokens)
        self.confusion += other.confusion
        self.top_probability_sum += other.top_probability_sum
        self.unknown_labels += other.unknown_labels
        self.score_bins += other.score_bins
        self.bin_labelled += other.bin_labelled
        self.bin_correct += other.bin_correct
        if other.importance_sum is not None:
            self.importance_sum = (other.importance_sum.copy() if self.importance_sum is None
                                   else self.importance_sum + other.importance_sum)
            self.importance_rows += other.importance_rows
        self.importance_skipped += other.importance_skipped
        return self

    @property
    def labelled(self) -> int:
        return int(self.confusion.sum())

    @property
    def labels(self) -> int:
        """Records with a true label, those outside the model's classes included."""
        return self.labelled + int(self.unknown_labels.sum())

    @property
    def oov_share(self) -> float:
        return self.oov_total / self.tokens_total if self.tokens_total else 0.0

    def importance(self) -> np.ndarray | None:
        """Mean importance contribution per feature, over the rows that contributed."""
        if self.importance_sum is None or not self.importance_rows:
            return None
        mean: np.ndarray = self.importance_sum / self.importance_rows
        return mean

    def to_json(self, top_features: int = 200, names: list[str] | None = None
                ) -> dict[str, Any]:
        """A JSON document (sketches base64); the mean importance of every feature
        (float32, base64) and, named, of the top features."""
        out: dict[str, Any] = {
            "classes": self.classes, "n": self.n, "class_counts": self.class_counts.tolist(),
            "score": self.score.to_text(),
            "score_by_class": [s.to_text() for s in self.score_by_class],
            "length": self.length.to_text(), "tokens": self.tokens.to_text(),
            "tokens_total": self.tokens_total, "oov_total": self.oov_total,
            "confusion": self.confusion.tolist(),
            "top_probability_sum": self.top_probability_sum, "reference": self.reference,
            "unknown_labels": self.unknown_labels.tolist(),
            "score_bins": self.score_bins.tolist(), "bin_labelled": self.bin_labelled.tolist(),
            "bin_correct": self.bin_correct.tolist(),
        }
        if self.oov_tokens is not None:
            out["oov_tokens"] = self.oov_tokens.to_text()
        importance = self.importance()
        if importance is not None:
            top = np.argsort(-importance, kind="stable")[:top_features]
            out["importance_top"] = [
                [int(i), names[i] if names else str(i), float(importance[i])] for i in top]
            out["importance"] = base64.b64encode(importance.astype("<f4").tobytes()).decode()
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Profile:
        p = cls(classes=list(data["classes"]))
        p.n = int(data["n"])
        p.class_counts = np.asarray(data["class_counts"], np.int64)
        p.score = Sketch.from_text(data["score"])
        p.score_by_class = [Sketch.from_text(t) for t in data["score_by_class"]]
        p.length = Sketch.from_text(data["length"])
        p.tokens = Sketch.from_text(data["tokens"])
        p.tokens_total, p.oov_total = int(data["tokens_total"]), int(data["oov_total"])
        p.confusion = np.asarray(data["confusion"], np.int64)
        p.top_probability_sum = float(data["top_probability_sum"])
        k = len(p.classes)
        p.unknown_labels = np.asarray(data.get("unknown_labels", [0] * k), np.int64)
        for name in ("score_bins", "bin_labelled", "bin_correct"):
            setattr(p, name, np.asarray(data.get(name, [0] * SCORE_BINS), np.int64))
        p.reference = dict(data.get("reference", {}))
        p.oov_tokens = OovTokens.from_text(data["oov_tokens"]) if "oov_tokens" in data \
            else None
        if "importance" in data:  # the reference's mean importance of every feature
            p.importance_all = np.frombuffer(
                base64.b64decode(data["importance"]), "<f4").astype(np.float64)
        if "importance_top" in data:
            p.reference["importance_top"] = data["importance_top"]
        return p
