"""Property-based tests of preprocessing (hypothesis): any text, any settings, no
exception; preprocessing is idempotent (a text already prepared is left as it is)."""

from __future__ import annotations

import pandas as pd
from hypothesis import example, given, settings
from hypothesis import strategies as st

from models.preprocess import PreprocessConfig, preprocess_series, preprocess_text

SETTINGS = st.builds(PreprocessConfig, nfkc=st.booleans(), strip_control=st.booleans(),
                     strip_html=st.booleans(), collapse_whitespace=st.booleans(),
                     lowercase=st.booleans(), truncate_chars=st.sampled_from([0, 5, 50]))


@settings(max_examples=1000, deadline=None)
@given(st.text(max_size=300), SETTINGS)
@example("e\x01\u0301", PreprocessConfig())  # the pair NFKC composes once \x01 is gone
@example("\u1e9e", PreprocessConfig(lowercase=True))  # capital sharp s, lowered, NFKC
def test_preprocessing_never_raises_and_is_idempotent(text: str, cfg: PreprocessConfig) -> None:
    once = preprocess_text(text, cfg)
    assert isinstance(once, str)
    assert preprocess_text(once, cfg) == once


@settings(max_examples=2000, deadline=None)
@given(st.text(alphabet=st.sampled_from("<>/ab \t\n&!-\x01"), max_size=60), SETTINGS)
@example("<a<a>>", PreprocessConfig())  # removing the inner tag leaves the tag "<a >"
@example("<a" * 31 + ">" * 31 + " hi", PreprocessConfig())  # 31 levels: 32 passes
@example("<\x01p>x", PreprocessConfig())  # removing \x01 leaves the tag "<p>"
def test_tag_soup_is_idempotent_too(text: str, cfg: PreprocessConfig) -> None:
    once = preprocess_text(text, cfg)
    assert preprocess_text(once, cfg) == once


# Pieces of batch texts: words, single and repeated spaces, every ASCII whitespace and
# control character, NUL (the batch's own separator), tags and "<", non-ASCII letters
# and spaces, C1 controls.
_PIECES = st.sampled_from([
    "word", "Word", "WORD", "a", " ", "  ", "\t", "\n", "\r", "\x0b", "\x0c", "\x1c", "\x1f",
    "\x00", "\x01", "\x07", "\x1b", "\x7f", "<b>", "</b>", "<", ">", "é", "ﬁ", "\u3000",
    "\u00a0", "\x85", "\x9f", "İ", "ß", "1", "_", ".",
])
_PLAIN = st.lists(st.sampled_from(["word", "A", " ", "  ", "."]), max_size=6).map("".join)
_BATCH = st.one_of(st.lists(_PLAIN, max_size=6), st.lists(st.one_of(
    _PLAIN, st.lists(_PIECES, max_size=10).map("".join), st.text(max_size=12), st.none(),
    st.just(2.5)), max_size=20))


@settings(max_examples=1000, deadline=None)
@given(_BATCH, SETTINGS)
@example(["plain ", "text"], PreprocessConfig())
def test_a_batch_is_prepared_as_each_text_alone(values: list[object], cfg: PreprocessConfig
                                                ) -> None:
    """``preprocess_series`` prepares plain ASCII texts of a batch together: the result is
    ``preprocess_text`` of each text alone, whatever the mix (None stays None, other
    non-str values become NaN)."""
    got = preprocess_series(pd.Series(values, dtype=object), cfg).tolist()
    if not (cfg.nfkc or cfg.strip_html or cfg.strip_control or cfg.collapse_whitespace
            or cfg.lowercase or cfg.truncate_chars):  # no step: the values as they are
        assert got == values
        return
    for g, v in zip(got, values):
        if isinstance(v, str):
            assert g == preprocess_text(v, cfg), (v, g)
        elif v is None:
            assert g is None
        else:
            assert g != g  # NaN
    assert len(got) == len(values)


def test_version_1_the_order_of_models_without_a_version_applies_each_step_once() -> None:
    """A model whose metadata names no version was trained with each step applied once:
    it is scored so, text for text (not idempotent on nested tags); new models record
    version 2."""
    old = PreprocessConfig.from_dict({k: v for k, v in PreprocessConfig().to_dict().items()
                                      if k != "version"})
    assert old.version == 1 and PreprocessConfig().to_dict()["version"] == 2
    assert preprocess_text("<a<a>> x", old) == "<a > x"
    assert preprocess_text("<a<a>> x", PreprocessConfig()) == "x"
    assert PreprocessConfig.from_dict(PreprocessConfig().to_dict()) == PreprocessConfig()


def test_a_hostile_nesting_of_tags_costs_a_bounded_number_of_passes() -> None:
    """20,000 tags nested in one another: the passes are bounded (32), so it takes well
    under a second (15 s unbounded); its inner levels are left."""
    import time

    started = time.perf_counter()
    out = preprocess_text("<a" * 20_000 + ">" * 20_000 + " hi", PreprocessConfig())
    assert time.perf_counter() - started < 3.0
    assert out.startswith("<a<a")  # cut to truncate_chars, inner levels kept
