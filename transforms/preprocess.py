"""Text preprocessing shared by training and scoring.

The settings are recorded in a model's metadata when it is trained or registered, and
scoring rebuilds a ``PreprocessConfig`` from that metadata, so a model always sees text
prepared exactly as it was at training. Functions work on whole pandas Series (one
vectorised pass per step) because they run on every batch of the hot path.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import pandas as pd

# Tags (<p>, </div>, <br/>, <a href=...>) and comments; not "a < b and c > d".
_HTML_TAG = r"<!--.*?-->|</?[A-Za-z][A-Za-z0-9-]*(?:\s[^<>]{0,2000})?/?>"
# C0/C1 control characters except tab, newline, carriage return (whitespace handles those).
_CONTROL = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]"
_WHITESPACE = r"\s+"


@dataclass(frozen=True)
class PreprocessConfig:
    nfkc: bool = True
    strip_control: bool = True
    strip_html: bool = True
    collapse_whitespace: bool = True
    lowercase: bool = False
    truncate_chars: int = 10_000  # 0 = keep everything

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown preprocessing settings in model metadata: {sorted(unknown)}")
        return cls(**data)


def preprocess_series(texts: pd.Series, cfg: PreprocessConfig) -> pd.Series:
    """Apply the configured steps, in a fixed order, to a Series of str."""
    s = texts
    if cfg.nfkc:
        s = s.str.normalize("NFKC")
    if cfg.strip_html:
        s = s.str.replace(_HTML_TAG, " ", regex=True)
    if cfg.strip_control:
        s = s.str.replace(_CONTROL, "", regex=True)
    if cfg.collapse_whitespace:
        s = s.str.replace(_WHITESPACE, " ", regex=True).str.strip()
    if cfg.lowercase:
        s = s.str.lower()
    if cfg.truncate_chars > 0:
        s = s.str.slice(0, cfg.truncate_chars)
    return s


def preprocess_texts(texts: list[str], cfg: PreprocessConfig) -> list[str]:
    """List-in, list-out convenience used by training and the benchmark baselines."""
    return preprocess_series(pd.Series(texts, dtype=object), cfg).tolist()
