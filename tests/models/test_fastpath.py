"""models.fastpath: vectorised featurisation must equal scikit-learn's bit for bit."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from landing.samples import make_docs
from models import fastpath
from models.fastpath import FastTextPipeline, unsupported_reason

# Cases sklearn's tokenizer and n-gram builder must agree on: case, accents, digits,
# underscores, punctuation, 1-char tokens (dropped), one token, no token, repeated
# bigrams, words absent from the vocabulary, non-Latin scripts.
TRICKY = [
    "", "   ", "a", "x y z", "refund", "Refund REFUND refund!", "refund refund refund refund",
    "café crème brûlée Café", "order_id 12345 order_id 12345", "dans l'hôtel — très bien",
    "zzqx unknownword refund please", "обновление заказа refund", "退款 请求 refund",
    "tab\there, newline\nthere", "please refund please refund please",
    "a_b _ __ x1 2y 33", "it's don't e-mail foo@bar.com", "nul\x00inside refund", "K kelvin",
]


def _corpus(n: int, seed: int) -> list[str]:
    return [d["text"] for d in make_docs(n, seed=seed)] + TRICKY


def _labels(n: int) -> list[str]:
    return [d["label"] for d in make_docs(n, seed=5)]


def _fit(vectorizer: Any) -> Pipeline:
    texts = [d["text"] for d in make_docs(400, seed=5)]
    return Pipeline([("vec", vectorizer), ("clf", LogisticRegression(max_iter=200))]).fit(
        texts, _labels(400))


VARIANTS = {
    "recipe": TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True,
                              dtype=np.float32),
    "unigrams-counts": CountVectorizer(),
    "binary-no-lowercase": TfidfVectorizer(ngram_range=(1, 2), binary=True, lowercase=False),
    "no-idf-no-norm": TfidfVectorizer(ngram_range=(1, 2), use_idf=False, norm=None,
                                      max_features=300),
}


@pytest.mark.parametrize("keys", ["32-bit", "64-bit"])
@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_counts_and_probabilities_are_identical_to_sklearn(
        name: str, keys: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whichever width the batch's (row, column) keys are sorted in."""
    if keys == "64-bit":
        monkeypatch.setattr(fastpath, "KEY32_SPAN", 0)
    model = _fit(VARIANTS[name])
    assert unsupported_reason(model) is None
    fast = FastTextPipeline(model)
    texts = _corpus(300, seed=8)
    _, expected = model.steps[0][1]._count_vocab(texts, fixed_vocab=True)
    got = fast.counts(texts)
    for attr in ("indptr", "indices", "data"):
        assert np.array_equal(getattr(got, attr), getattr(expected, attr)), attr
        assert getattr(got, attr).dtype == getattr(expected, attr).dtype, attr
    assert np.array_equal(fast.predict_proba(texts), model.predict_proba(texts))
    assert list(fast.classes_) == list(model.classes_)
    assert fast.counts([]).shape == (0, len(model.steps[0][1].vocabulary_))


def test_ascii_and_other_documents_alone_or_mixed_give_sklearn_counts() -> None:
    model = _fit(VARIANTS["recipe"])
    fast = FastTextPipeline(model)
    vec = model.steps[0][1]
    ascii_only = [t for t in _corpus(50, seed=2) if t.isascii() and "\x00" not in t]
    others = [t for t in TRICKY if not t.isascii() or "\x00" in t]
    assert len(others) >= 5
    for texts in (ascii_only, others, others + ascii_only, ["refund"], ["é"], []):
        _, expected = vec._count_vocab(texts, fixed_vocab=True)
        got = fast.counts(texts)
        assert (got != expected).nnz == 0 and np.array_equal(got.indptr, expected.indptr)


@pytest.mark.parametrize("vectorizer, reason", [
    (TfidfVectorizer(stop_words="english"), "stop_words"),
    (TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 3)), "analyzer"),
    (TfidfVectorizer(ngram_range=(1, 3)), "ngram_range"),
    (TfidfVectorizer(token_pattern=r"\S+"), "token_pattern"),
    (TfidfVectorizer(strip_accents="unicode"), "strip_accents"),
])
def test_other_vectorizer_settings_are_left_to_sklearn(vectorizer: Any, reason: str) -> None:
    model = _fit(vectorizer)
    assert reason in (unsupported_reason(model) or "")
    with pytest.raises(ValueError, match="no fast path"):
        FastTextPipeline(model)


class _StemmingVectorizer(TfidfVectorizer):  # type: ignore[misc]
    """Its own analyzer: the fast path, which reimplements scikit-learn's, would not
    run it."""

    def build_analyzer(self) -> Any:
        analyze = super().build_analyzer()
        return lambda doc: [token[:4] for token in analyze(doc)]


def test_a_vectorizer_subclass_is_left_to_sklearn() -> None:
    model = _fit(_StemmingVectorizer())
    assert "not scikit-learn's CountVectorizer or TfidfVectorizer itself" in (
        unsupported_reason(model) or "")


@pytest.mark.parametrize("vocabulary", [
    {"ab": 0, "ab\x00": 1, "zz": 2},          # NUL: would pack like "ab"
    {"ab\udc80": 0, "ab": 1, "zz": 2},         # a lone surrogate
    {"": 0, "a": 1, "ab": 2, "ab zz": 3, "zz": 4},  # 0- and 1-character terms, a bigram
])
def test_vocabularies_given_by_hand_count_as_sklearn(vocabulary: dict[str, int]) -> None:
    model = Pipeline([("vec", CountVectorizer(vocabulary=vocabulary, ngram_range=(1, 2))),
                      ("clf", LogisticRegression())])
    vec = model.steps[0][1]
    vec.fit([])
    texts = ["ab ab zz", "a ab\x00 zz ab", "", "zz", "ab zz ab zz", "é ab zz"]
    _, expected = vec._count_vocab(texts, fixed_vocab=True)
    model.steps[1] = ("clf", LogisticRegression().fit(expected, [0, 1, 0, 1, 0, 1]))
    got = FastTextPipeline(model).counts(texts)
    for attr in ("indptr", "indices", "data"):
        assert np.array_equal(getattr(got, attr), getattr(expected, attr)), attr


# Terms a vocabulary given by hand may hold: tokens of 0-9 bytes, with NUL, a lone
# surrogate, upper case or non-ASCII letters, and bigrams of them.
_WORDS = st.sampled_from(["", "a", "ab", "AB", "ab\x00", "\x00", "ab\udc80", "é", "café",
                          "abcdefgh", "abcdefghi", "zz", "zz9", "x_y", "ab\x00cdefgh"])
_TERMS = st.one_of(_WORDS, st.tuples(_WORDS, _WORDS).map(" ".join))
_HAND_DOCS = st.lists(st.lists(st.sampled_from(
    ["ab", "AB", "abcdefgh", "abcdefghi", "zz", "zz9", "x_y", "a", "é", "café", " ", ",",
     "\x00"]), max_size=10).map(" ".join), min_size=1, max_size=8)


@pytest.mark.filterwarnings("ignore:Upper case characters found in vocabulary")
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(terms=st.lists(_TERMS, min_size=1, max_size=12, unique=True), texts=_HAND_DOCS,
       lowercase=st.booleans())
@example(terms=["ab", "ab\x00", "zz"], texts=["ab ab zz"], lowercase=True)
def test_any_vocabulary_given_by_hand_counts_as_sklearn(terms: list[str], texts: list[str],
                                                        lowercase: bool) -> None:
    vec = CountVectorizer(vocabulary={t: i for i, t in enumerate(terms)},
                          ngram_range=(1, 2), lowercase=lowercase).fit([])
    clf = LogisticRegression().fit(np.eye(2, len(terms)), [0, 1])
    model = Pipeline([("vec", vec), ("clf", clf)])
    _, expected = vec._count_vocab(texts, fixed_vocab=True)
    got = FastTextPipeline(model).counts(texts)
    for attr in ("indptr", "indices", "data"):
        assert np.array_equal(getattr(got, attr), getattr(expected, attr)), attr


def test_a_vocabulary_with_longer_terms_is_left_to_sklearn() -> None:
    vec = CountVectorizer(vocabulary={"ab zz yy": 0, "ab": 1}, ngram_range=(1, 2)).fit([])
    model = Pipeline([("vec", vec), ("clf", LogisticRegression())])
    assert "vocabulary_" in (unsupported_reason(model) or "")


def test_non_pipeline_models_are_left_to_sklearn() -> None:
    assert "not a Pipeline" in (unsupported_reason(LogisticRegression()) or "")


# Pieces a document is drawn from: 1-character words (never tokens), words of the
# vocabulary in both cases, of 8 bytes and longer (the ASCII path looks tokens of up to 8
# bytes up as one integer, longer ones by their bytes) and their prefixes, unknown words,
# digits and underscores, punctuation and every ASCII whitespace character, non-ASCII
# letters and spaces, NUL (the fast path's own document separator).
_PIECES = st.sampled_from([
    "a", "I", "x", "7", "_", "refund", "Refund", "REFUND", "order", "please", "zzqx", "o1",
    "customer", "Customer", "customers", "custome", "subscription", "SUBSCRIPTION",
    "replaceme", "replacement", "yesterday", "yesterda", "zzzzzzzzz", "__________",
    "__", "a_b", "12345", ",", ".", "!", "'", "-", "@", " ", "  ", "\t", "\n", "\r", "\x0b",
    "\x0c", "\x1c", "\x1f", "é", "café", "Ω", "\u3000", "\x00", "\x85", "ß",
])
_DOCS = st.lists(st.lists(_PIECES, max_size=12).map("".join), max_size=25)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts=_DOCS, name=st.sampled_from(sorted(VARIANTS)))
def test_any_batch_counts_and_tokens_equal_sklearn_and_the_token_pattern(
        texts: list[str], name: str) -> None:
    if name not in _MODELS:
        _MODELS[name] = _fit(VARIANTS[name])
    model = _MODELS[name]
    vec = model.steps[0][1]
    _, expected = vec._count_vocab(texts, fixed_vocab=True)
    got, tokens, oov, oov_rows, oov_words = FastTextPipeline(model).counts_and_tokens(texts)
    for attr in ("indptr", "indices", "data"):
        assert np.array_equal(getattr(got, attr), getattr(expected, attr)), attr
    # An independent reference for the token statistics: the pattern, one text at a time.
    pattern = re.compile(vec.token_pattern)
    found = [pattern.findall(t.lower() if vec.lowercase else t) for t in texts]
    unknown = [[w for w in words if w not in vec.vocabulary_] for words in found]
    assert tokens.tolist() == [len(words) for words in found]
    assert oov.tolist() == [len(words) for words in unknown]
    assert sorted(zip(oov_rows.tolist(), oov_words)) == sorted(
        (i, w) for i, words in enumerate(unknown) for w in words)


_MODELS: dict[str, Pipeline] = {}


def test_warm_builds_the_lookup_tables_a_forking_process_hands_down() -> None:
    fast = FastTextPipeline(_fit(VARIANTS["recipe"]))
    tables = (fast._short_keys, fast._bi_keys)
    assert not any(t._engine.is_mapping_populated for t in tables)
    fast.warm()
    assert all(t._engine.is_mapping_populated for t in tables)
