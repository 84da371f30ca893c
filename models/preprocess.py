"""Text preprocessing: part of a model, applied identically at training and scoring.

The settings are recorded in a model's metadata when it is trained or registered, and
scoring rebuilds a ``PreprocessConfig`` from that metadata, so a model always sees text
prepared exactly as it was at training. ``preprocess_series`` runs on every batch of
the hot path, so it skips the work a step cannot do on a given text (NFKC on ASCII
text, the HTML pattern on text without "<"), and prepares the batch's plain ASCII texts
together, checking their characters as one array and collapsing whitespace only where
there is something to collapse; the result is the same, character for character, as
applying each step to the whole Series with pandas' ``.str`` methods in turn
(``tests/models/test_preprocess.py`` checks it against that reference on every
combination of settings, and a property test a batch against each text alone).
Preprocessing is idempotent: a text already prepared comes out unchanged
(property-tested), so a cut at a space after collapsing whitespace also drops that
space. That takes ``version`` 2 (the default, recorded with every model since): NFKC,
control characters, HTML tags and the case are applied again until the text no longer
changes (for tags nested up to 31 deep: the passes are bounded, so a hostile text costs
at most 32 passes), since removing one can make another (``<a<a>>`` leaves the tag ``<a >``;
``<\x01p>`` leaves ``<p>``; ``e\x01\u0301`` leaves a pair NFKC composes). Version 1,
the order of models whose metadata names no version, applies each step once, in the
order NFKC, tags, control characters, whitespace, case, cut.
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

# Tags (<p>, </div>, <br/>, <a href=...>) and comments; not "a < b and c > d".
HTML_TAG_PATTERN = r"<!--.*?-->|</?[A-Za-z][A-Za-z0-9-]*(?:\s[^<>]{0,2000})?/?>"
# C0/C1 control characters except tab, newline, carriage return (whitespace handles those).
CONTROL_PATTERN = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]"
_HTML_RE = re.compile(HTML_TAG_PATTERN)
_CONTROL_RE = re.compile(CONTROL_PATTERN)
VERSION = 2  # of the steps' order, recorded in every model's metadata
# Passes to stability: one more than the depth of tags nested in one another; a text
# nested deeper (hostile: 20,000 levels took 15 s unbounded) keeps its inner levels.
_MAX_PASSES = 32


@dataclass(frozen=True)
class PreprocessConfig:
    nfkc: bool = field(default=True, metadata={"help": "train: Unicode NFKC normalisation"})
    strip_control: bool = field(default=True, metadata={"help": "train: remove control characters"})
    strip_html: bool = field(default=True, metadata={
        "help": "train: replace HTML tags with a space"})
    collapse_whitespace: bool = field(default=True, metadata={
        "help": "train: collapse runs of whitespace"})
    lowercase: bool = field(default=False, metadata={"help": "train: lowercase the text"})
    truncate_chars: int = field(default=10_000, metadata={"min": 0,
        "help": "train: cut preprocessed text to this length (0 = no cut)"})
    version: int = field(default=VERSION, metadata={"min": 1, "max": VERSION,
        "help": "train: 2 repeats the steps until the text is stable (idempotent); 1 once"})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessConfig:
        """The settings a model's metadata records; without a version, version 1 (what
        models registered before versions were recorded saw)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown preprocessing settings in model metadata: {sorted(unknown)}")
        return cls(**({"version": 1} | data))


def _clean(text: str, cfg: PreprocessConfig) -> str:
    """NFKC, tags, control characters, each once, in that order."""
    if cfg.nfkc and not text.isascii():  # ASCII text is always NFKC-normal
        text = unicodedata.normalize("NFKC", text)
    if cfg.strip_html and "<" in text:  # every tag and comment starts with "<"
        text = _HTML_RE.sub(" ", text)
    if cfg.strip_control and _CONTROL_RE.search(text):
        text = _CONTROL_RE.sub("", text)
    return text


def preprocess_text(text: str, cfg: PreprocessConfig) -> str:
    """The configured steps, in a fixed order, on one str."""
    if cfg.version < 2:
        text = _clean(text, cfg)
    else:  # until stable, for at most _MAX_PASSES passes (the cost stays linear)
        for _ in range(_MAX_PASSES):
            cleaned = _clean(text, cfg)
            if cfg.lowercase:
                cleaned = cleaned.lower()
            if cleaned == text:
                break
            text = cleaned
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
    values = texts.tolist()
    out: list[Any] = [None if t is None else float("nan") for t in values]
    at = [i for i, t in enumerate(values) if type(t) is str]
    for i, text in zip(at, _prepare([values[i] for i in at], cfg)):
        out[i] = text
    return pd.Series(out, index=texts.index, dtype=object)


def _prepare(texts: list[str], cfg: PreprocessConfig) -> list[str]:
    """``preprocess_text`` of each text. With whitespace collapsed, the texts only
    whitespace, case and the cut can change (ASCII, so NFKC-normal; no "<" when tags are
    stripped; no control character when those are stripped; no NUL) are prepared
    together, joined by NULs: their characters are checked as one array, whitespace is
    collapsed only in the texts that need it (most need none), the case changed and the
    texts cut apart in one pass each. The others go one by one."""
    if not cfg.collapse_whitespace:
        return [preprocess_text(t, cfg) for t in texts]
    html = cfg.strip_html
    plain = [i for i, t in enumerate(texts)
             if t.isascii() and "\x00" not in t and not (html and "<" in t)]
    joined = "\x00".join([texts[i] for i in plain])
    if cfg.strip_control and _controls(joined).any():
        plain = [i for i in plain if not _controls(texts[i]).any()]
        joined = "\x00".join([texts[i] for i in plain])
    out = [""] * len(texts)
    for i in set(range(len(texts))).difference(plain):
        out[i] = preprocess_text(texts[i], cfg)
    if not plain:
        return out
    if not _collapsed(joined):  # some text holds a run of spaces, a tab, a space at an end...
        joined = "\x00".join([t if _plain_spaced(t) else " ".join(t.split())
                              for t in (texts[i] for i in plain)])
    if cfg.lowercase:
        joined = joined.lower()
    limit = cfg.truncate_chars
    for i, text in zip(plain, joined.split("\x00")):
        out[i] = text[:limit].rstrip() if 0 < limit < len(text) else text
    return out


def _plain_spaced(text: str) -> bool:
    """``_collapsed`` of one ASCII text, with str methods (a text at a time is cheaper
    so): printable (no whitespace but spaces), no two spaces running, none at an end."""
    return text.isprintable() and "  " not in text and text[:1] != " " and text[-1:] != " "


def _codes(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("ascii"), dtype=np.uint8)


def _controls(text: str) -> np.ndarray:
    """Where the ASCII ``text`` holds what ``CONTROL_PATTERN`` removes, NUL aside."""
    c = _codes(text)
    return ((c < 32) & (c != 0) & (c != 9) & (c != 10) & (c != 13)) | (c == 127)


def _collapsed(text: str) -> bool:
    """Whether collapsing whitespace leaves each NUL-separated part of the ASCII
    ``text`` as it is: no whitespace but single spaces, none at either end of a part
    (every character below 32 but NUL counts as other whitespace)."""
    c = _codes(text)
    if not len(c):
        return True
    space, nul = c == 32, c == 0
    return not (space[0] or space[-1] or ((c < 32) & ~nul).any()
                or (space[1:] & (space[:-1] | nul[:-1])).any() or (space[:-1] & nul[1:]).any())


def preprocess_texts(texts: list[str], cfg: PreprocessConfig) -> list[str]:
    """List-in, list-out convenience used by training and the benchmark baselines."""
    return preprocess_series(pd.Series(texts, dtype=object), cfg).tolist()
