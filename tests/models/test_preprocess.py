"""Preprocessing steps, their order, and the one-pass implementation against pandas."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

from models.preprocess import (
    CONTROL_PATTERN,
    HTML_TAG_PATTERN,
    PreprocessConfig,
    preprocess_series,
    preprocess_texts,
)

ONLY = PreprocessConfig(nfkc=False, strip_control=False, strip_html=False,
                        collapse_whitespace=False, lowercase=False, truncate_chars=0)



def _one(text: str, **steps: Any) -> str:
    cfg = PreprocessConfig(**(ONLY.to_dict() | steps))
    return preprocess_series(pd.Series([text], dtype=object), cfg).iloc[0]


def test_all_steps_off_is_identity() -> None:
    text = "  ＡＢＣ <b>x</b>\x00\tY  "
    assert _one(text) == text


def test_nfkc_folds_compatibility_characters() -> None:
    assert _one("ﬁle ＡＢＣ１２ ①", nfkc=True) == "file ABC12 1"
    assert _one("ﬁle", nfkc=False) == "ﬁle"


def test_strip_control_removes_c0_c1_but_keeps_tab_newline() -> None:
    assert _one("a\x00b\x07c\x1bd\x7fe\x85f\x9fg", strip_control=True) == "abcdefg"
    assert _one("a\tb\nc\rd", strip_control=True) == "a\tb\nc\rd"


def test_strip_html_replaces_tags_with_a_space() -> None:
    assert _one("<p>Hello<br/>world</p>", strip_html=True) == " Hello world "
    assert _one('<a href="x">link</a>', strip_html=True) == " link "


def test_collapse_whitespace_and_strip_ends() -> None:
    assert _one("  a \t\n\n b\u00a0 c  ", collapse_whitespace=True) == "a b c"


def test_lowercase_only_when_enabled() -> None:
    assert _one("HeLLo ÉTÉ", lowercase=True) == "hello été"
    assert _one("HeLLo", lowercase=False) == "HeLLo"


def test_truncate_chars_zero_keeps_everything() -> None:
    assert _one("abcdef", truncate_chars=3) == "abc"
    assert _one("abcdef", truncate_chars=0) == "abcdef"


def test_default_steps_compose_in_order() -> None:
    # NFKC turns full-width brackets into a tag, which is then stripped; whitespace
    # collapsing happens before truncation, so truncation counts cleaned characters.
    cfg = PreprocessConfig(lowercase=True, truncate_chars=9)
    assert preprocess_texts(["＜b＞Hello\x00   WORLD＜/b＞ tail"], cfg) == ["hello wor"]


def test_preprocessing_is_vectorised_row_by_row() -> None:
    texts = ["<i>A</i>", "b  c", "ﬁ"]
    cfg = PreprocessConfig()
    together = preprocess_texts(texts, cfg)
    assert together == [preprocess_texts([t], cfg)[0] for t in texts] == ["A", "b c", "fi"]


def _reference(texts: pd.Series, cfg: PreprocessConfig) -> pd.Series:
    """The steps as whole-Series pandas ``.str`` calls: the definition that models
    trained before the one-pass implementation saw, kept as the oracle."""
    s = texts
    if cfg.nfkc:
        s = s.str.normalize("NFKC")
    if cfg.strip_html:
        s = s.str.replace(HTML_TAG_PATTERN, " ", regex=True)
    if cfg.strip_control:
        s = s.str.replace(CONTROL_PATTERN, "", regex=True)
    if cfg.collapse_whitespace:
        s = s.str.replace(r"\s+", " ", regex=True).str.strip()
    if cfg.lowercase:
        s = s.str.lower()
    if cfg.truncate_chars > 0:
        s = s.str.slice(0, cfg.truncate_chars)
        if cfg.collapse_whitespace:
            s = s.str.rstrip()
    return s


TRICKY = [
    "", " ", "plain ascii words", "  lead and trail  ", "a < b and c > d", "x<y",
    "<p>Hello<br/>world</p>", '<a href="x">link</a>', "<!-- note -->kept<!--\nnot a comment-->",
    "<div\nclass='x'>multi\nline</div>", "＜b＞Hello\x00   WORLD＜/b＞ tail", "ﬁle ＡＢＣ１２ ①",
    "a\x00b\x07c\x1bd\x7fe\x85f\x9fg", "sep\x1cfs\x1dgs\x1ers\x1fus", "a\tb\nc\rd\x0be\x0cf",
    "nbsp\u00a0here\u2028line\u2029para\u3000ideo\u200bzw\u180emongolian",
    "HeLLo ÉTÉ İstanbul ß ǅ", "e\u0301 combining, ｶﾀｶﾅ half-width, ㌔", "emoji 😀 <3 >_<",
    "<b>" * 50 + "x" * 300 + "</b>" * 50, "word " * 3000,
]


SETTINGS = [PreprocessConfig(nfkc=a, strip_html=b, strip_control=c, collapse_whitespace=d,
                             lowercase=e, truncate_chars=t)
            for a in (True, False) for b in (True, False) for c in (True, False)
            for d in (True, False) for e in (True, False) for t in (0, 7, 10_000)]


@pytest.mark.parametrize("cfg", SETTINGS, ids=lambda c: "-".join(
    f"{k}={int(v) if isinstance(v, bool) else v}" for k, v in c.to_dict().items()))
def test_one_pass_preprocessing_equals_the_series_reference(cfg: PreprocessConfig) -> None:
    values = TRICKY + [None, 3.5, float("nan")]
    texts = pd.Series(values, dtype=object, index=range(5, 5 + len(values)))
    got, want = preprocess_series(texts, cfg), _reference(texts, cfg)
    assert list(got.index) == list(want.index)
    assert got.iloc[:len(TRICKY)].tolist() == want.iloc[:len(TRICKY)].tolist()
    for g, w in zip(got.iloc[len(TRICKY):], want.iloc[len(TRICKY):]):  # None, 3.5, NaN
        assert g is w or g == w or (g != g and w != w), (g, w)


def test_regex_whitespace_is_str_isspace() -> None:
    """The one-pass collapse (str.split) relies on \\s meaning str.isspace()."""
    import re
    import sys

    chars = [chr(c) for c in range(sys.maxunicode + 1) if not 0xD800 <= c <= 0xDFFF]
    assert [c for c in chars if re.fullmatch(r"\s", c)] == [c for c in chars if c.isspace()]


def test_preprocess_config_round_trips_and_rejects_unknown_settings() -> None:
    cfg = PreprocessConfig(lowercase=True, truncate_chars=5)
    assert PreprocessConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="stem"):
        PreprocessConfig.from_dict({"stem": True})

