"""Text preprocessing: part of a model, applied identically at training and scoring.

The settings are recorded in a model's metadata when it is trained or registered, and
scoring rebuilds a ``PreprocessConfig`` from that metadata, so a model always sees text
prepared exactly as it was at training. ``preprocess_series`` runs on every batch of
the hot path, so it makes one pass over the texts and skips the work a step cannot do
on a given text (NFKC on ASCII text, the HTML pattern on text without "<"); the result
is the same, character for character, as applying each step to the whole Series with
pandas' ``.str`` methods in turn (``tests/models/test_preprocess.py`` checks it against
that reference on every combination of settings). Preprocessing is idempotent: a text
already prepared comes out unchanged (property-tested), so a cut at a space after
collapsing whitespace also drops that space.
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

# Tags (<p>, </div>, <br/>, <a href=...>) and comments; not "a < b and c > d".
HTML_TAG_PATTERN = r"<!--.*?-->|</?[A-Za-z][A-Za-z0-9-]*(?:\s[^<>]{0,2000})?/?>"
# C0/C1 control characters except tab, newline, carriage return (whitespace handles those).
CONTROL_PATTERN = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]"
_HTML_RE = re.compile(HTML_TAG_PATTERN)
_CONTROL_RE = re.compile(CONTROL_PATTERN)


@dataclass(frozen=True)
class PreprocessConfig:
    nfkc: bool = field(default=True, metadata={"help": "train: Unicode NFKC normalisation"})
    strip_control: bool = field(default=True, metadata={"help": "train: remove control characters"})
    strip_html: bool = field(default=True, metadata={
        "help": "train: replace HTML tags with a space"})
    collapse_whitespace: bool = field(default=True, metadata={
        "help": "train: collapse runs of whitespace"})
    lowercase: bool = field(default=False, metadata={"help": "train: lowercase the text"})
    truncate_chars: int = field(default=10_000, metadata={
        "help": "train: cut preprocessed text to this length (0 = no cut)"})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown preprocessing settings in model metadata: {sorted(unknown)}")
        return cls(**data)


def preprocess_text(text: str, cfg: PreprocessConfig) -> str:
    """The configured steps, in a fixed order, on one str."""
    if cfg.nfkc and not text.isascii():  # ASCII text is always NFKC-normal
        text = unicodedata.normalize("NFKC", text)
    if cfg.strip_html and "<" in text:  # every tag and comment starts with "<"
        text = _HTML_RE.sub(" ", text)
    if cfg.strip_control and _CONTROL_RE.search(text):
        text = _CONTROL_RE.sub("", text)
    if cfg.collapse_whitespace:
        # Same as re.sub(r"\s+", " ", text).strip(): \s, str.split() and str.strip()
        # all use str.isspace().
        text = " ".join(text.split())
    if cfg.lowercase:
        text = text.lower()
    if cfg.truncate_chars > 0:
        text = text[:cfg.truncate_chars]
        if cfg.collapse_whitespace:
            text = text.rstrip()  # a cut at a space: preprocessing stays idempotent
    return text


def preprocess_series(texts: pd.Series, cfg: PreprocessConfig) -> pd.Series:
    """``preprocess_text`` on every str of ``texts``; None stays None and any other
    non-str becomes NaN, as with pandas' ``.str`` methods (unless no step is on)."""
    if not (cfg.nfkc or cfg.strip_html or cfg.strip_control or cfg.collapse_whitespace
            or cfg.lowercase or cfg.truncate_chars > 0):
        return texts.copy()
    out = [preprocess_text(t, cfg) if type(t) is str else (None if t is None else float("nan"))
           for t in texts.tolist()]
    return pd.Series(out, index=texts.index, dtype=object)


def preprocess_texts(texts: list[str], cfg: PreprocessConfig) -> list[str]:
    """List-in, list-out convenience used by training and the benchmark baselines."""
    return preprocess_series(pd.Series(texts, dtype=object), cfg).tolist()
