"""Property-based tests of preprocessing (hypothesis): any text, any settings, no
exception; preprocessing is idempotent (a text already prepared is left as it is)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from models.preprocess import PreprocessConfig, preprocess_text

SETTINGS = st.builds(PreprocessConfig, nfkc=st.booleans(), strip_control=st.booleans(),
                     strip_html=st.booleans(), collapse_whitespace=st.booleans(),
                     lowercase=st.booleans(), truncate_chars=st.sampled_from([0, 5, 50]))


@given(st.text(max_size=300), SETTINGS)
def test_preprocessing_never_raises_and_is_idempotent(text: str, cfg: PreprocessConfig) -> None:
    once = preprocess_text(text, cfg)
    assert isinstance(once, str)
    assert preprocess_text(once, cfg) == once


@given(st.text(alphabet=st.sampled_from("<>/ab \t\n&!-"), max_size=60), SETTINGS)
def test_tag_soup_is_idempotent_too(text: str, cfg: PreprocessConfig) -> None:
    once = preprocess_text(text, cfg)
    assert preprocess_text(once, cfg) == once
