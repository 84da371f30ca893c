"""Vectorised featurisation for fitted word n-gram text pipelines, bit-identical to sklearn.

scikit-learn's ``CountVectorizer``/``TfidfVectorizer.transform`` counts features in a
Python loop: per document it builds every n-gram string and updates a dict per
feature (``_count_vocab``, the largest share of a scoring run's CPU). For
the common configuration -- word analyzer, the default token pattern, n-grams
(1, 1) or (1, 2), no custom preprocessor, tokenizer, accent stripping or stop words
-- ``FastTextPipeline`` computes the same count matrix another way:

1. tokens: for ASCII documents, all of a batch in one ``translate`` + ``split``
   (equivalent to the default token pattern on ASCII, see ``_ascii_features``);
   other documents ``token_pattern.findall(text.lower())`` one by one (as sklearn);
2. every token -> an integer id through one dict built from the vocabulary, in C
   (``map(dict.get, ...)``); tokens that occur in no vocabulary term get -1;
3. unigram columns by array lookup; bigram columns by a hash lookup (a pandas Index)
   of the pair key ``id_a * T + id_b`` among the keys of the vocabulary's bigrams;
4. a CSR matrix with duplicates summed and indices sorted, as ``_count_vocab`` returns.

The rest of the pipeline (``binary``, the TF-IDF weighting, the classifier) is
sklearn's own code on that matrix, so probabilities are identical to
``Pipeline.predict_proba`` bit for bit (checked in tests and on every benchmark run).
For anything else ``unsupported_reason`` says why, and the model is scored by sklearn.
"""

from __future__ import annotations

import re
from itertools import chain, repeat
from typing import Any

import numpy as np
import pandas as pd

# sklearn's default ``token_pattern``: tokens of 2+ word characters, never a space,
# so a vocabulary term "a b" is unambiguously the bigram ("a", "b").
DEFAULT_TOKEN_PATTERN = r"(?u)\b\w\w+\b"
# ASCII characters that are not \w (all but letters, digits, "_") -> space; NUL kept as
# the document separator.
_ASCII_WORD_CHARS = [chr(c) for c in range(128) if chr(c).isalnum() or chr(c) == "_"]
_ASCII_NON_WORD = str.maketrans({
    chr(c): " " for c in range(1, 128) if chr(c) not in _ASCII_WORD_CHARS
})
# Token ids of the pieces of an ASCII batch that are not tokens (vocabulary ids are >= 0).
_SINGLE, _SEPARATOR, _SEPARATOR_TEXT = -2, -3, "\x00"


def unsupported_reason(model: Any) -> str | None:
    """Why ``model`` cannot take the fast path, or None if it can."""
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.pipeline import Pipeline

    if not isinstance(model, Pipeline) or len(model.steps) < 2:
        return "not a Pipeline with a vectorizer and an estimator"
    vec = model.steps[0][1]
    if not isinstance(vec, CountVectorizer):  # TfidfVectorizer is a CountVectorizer
        return f"first step is {type(vec).__name__}, not a Count/TfidfVectorizer"
    checks = {
        "analyzer": vec.analyzer == "word",
        "input": vec.input == "content",
        "token_pattern": vec.token_pattern == DEFAULT_TOKEN_PATTERN,
        "tokenizer": vec.tokenizer is None,
        "preprocessor": vec.preprocessor is None,
        "strip_accents": vec.strip_accents is None,
        "stop_words": vec.stop_words is None,
        "ngram_range": tuple(vec.ngram_range) in ((1, 1), (1, 2)),
        "vocabulary_": isinstance(getattr(vec, "vocabulary_", None), dict),
    }
    failed = [name for name, ok in checks.items() if not ok]
    return f"vectorizer setting(s) {failed} not supported" if failed else None


_Parts = tuple[Any, Any, Any, Any, list[str]]


class FastTextPipeline:
    """``predict_proba`` and ``classes_`` of a fitted text Pipeline, vectorised counting."""

    def __init__(self, model: Any):
        reason = unsupported_reason(model)
        if reason:
            raise ValueError(f"no fast path for this model: {reason}")
        self.model = model
        self.classes_ = model.classes_
        vec = model.steps[0][1]
        self._vec = vec
        self._rest = model[1:]
        self._lower = bool(vec.lowercase)
        self._findall = re.compile(vec.token_pattern).findall
        self._n_features = len(vec.vocabulary_)
        token_ids: dict[str, int] = {}
        uni_tokens, uni_cols, bi_a, bi_b, bi_cols = [], [], [], [], []
        for term, col in vec.vocabulary_.items():
            parts = term.split(" ")
            ids = [token_ids.setdefault(p, len(token_ids)) for p in parts]
            if len(ids) == 1:
                uni_tokens.append(ids[0])
                uni_cols.append(col)
            elif len(ids) == 2:
                bi_a.append(ids[0])
                bi_b.append(ids[1])
                bi_cols.append(col)
            else:
                raise ValueError(f"vocabulary term {term!r} is not a 1- or 2-gram")
        n_tokens = len(token_ids)
        # One lookup of every piece of an ASCII batch (``_ascii_features``) also sorts out
        # what is not a token: a 1-character piece (the pattern wants 2+, so no vocabulary
        # term is one) -> _SINGLE, the document separator -> _SEPARATOR. Tokens the
        # vocabulary lacks get ``n_tokens``.
        token_ids.update(dict.fromkeys(_ASCII_WORD_CHARS, _SINGLE))
        token_ids[_SEPARATOR_TEXT] = _SEPARATOR
        self._token_ids = token_ids
        self._n_tokens = n_tokens
        # Column of each token as a unigram; index n_tokens (unknown token) -> -1.
        self._uni = np.full(n_tokens + 1, -1, dtype=np.int64)
        self._uni[np.asarray(uni_tokens, dtype=np.int64)] = uni_cols
        keys = np.asarray(bi_a, dtype=np.int64) * n_tokens + np.asarray(bi_b, dtype=np.int64)
        self._bi_keys = pd.Index(keys)  # a hash table of the pair keys, built on first use
        self._bi_cols = np.asarray(bi_cols, dtype=np.int64)
        self._bigrams = tuple(vec.ngram_range) == (1, 2)
        index_dtype = np.int32 if self._n_features < np.iinfo(np.int32).max else np.int64
        self._index_dtype = index_dtype

    def counts(self, texts: list[str]) -> Any:
        """The matrix ``vectorizer._count_vocab(texts, fixed_vocab=True)`` returns."""
        return self.counts_and_tokens(texts)[0]

    def counts_and_tokens(self, texts: list[str]
                          ) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, list[str]]:
        """``counts(texts)``, the tokens of each text, how many of them are not in the
        vocabulary (as unigrams), and those tokens: the text of each and the token."""
        import scipy.sparse as sp

        fast = [t.isascii() and "\x00" not in t for t in texts]
        ascii_docs = [i for i, ok in enumerate(fast) if ok]
        other_docs = [i for i, ok in enumerate(fast) if not ok] if len(ascii_docs) < len(texts) \
            else []
        parts = [self._ascii_features(texts, ascii_docs), self._regex_features(texts, other_docs)]
        r = np.concatenate([p[0] for p in parts])
        c = np.concatenate([p[1] for p in parts])
        tokens = np.bincount(np.concatenate([p[2] for p in parts]), minlength=len(texts))
        oov_rows = np.concatenate([p[3] for p in parts])
        oov = np.bincount(oov_rows, minlength=len(texts))
        data = np.ones(len(r), dtype=self._vec.dtype)
        x = sp.coo_matrix((data, (r, c)), shape=(len(texts), self._n_features)).tocsr()
        x.sum_duplicates()
        x.sort_indices()
        x.indices = x.indices.astype(self._index_dtype, copy=False)
        x.indptr = x.indptr.astype(self._index_dtype, copy=False)
        return x, tokens, oov, oov_rows, parts[0][4] + parts[1][4]

    def _ascii_features(self, texts: list[str], docs: list[int]) -> _Parts:
        """All ASCII documents in one pass: with only ASCII, ``\\b\\w\\w+\\b`` matches
        exactly the maximal runs of [A-Za-z0-9_] of 2+ characters, i.e. what is left by
        mapping every other character to a space, ``split()`` and dropping 1-character
        pieces. Documents are joined with a NUL separator (they contain none)."""
        joined = f" {_SEPARATOR_TEXT} ".join([texts[i] for i in docs])
        if self._lower:
            joined = joined.lower()
        flat = joined.translate(_ASCII_NON_WORD).split()
        ids = np.fromiter(map(self._token_ids.get, flat, repeat(self._n_tokens)),
                          dtype=np.int64, count=len(flat))
        rows = np.asarray(docs, dtype=np.int64)[np.cumsum(ids == _SEPARATOR)] if docs else \
            np.zeros(0, dtype=np.int64)
        kept = np.flatnonzero(ids >= 0)  # tokens: neither a 1-character piece nor a separator
        return self._features(rows[kept], ids[kept], flat, kept)

    def _regex_features(self, texts: list[str], docs: list[int]) -> _Parts:
        """Other documents one by one, with the vectorizer's own token pattern."""
        findall = self._findall
        tokens = ([findall(texts[i].lower()) for i in docs] if self._lower
                  else [findall(texts[i]) for i in docs])
        lengths = np.fromiter(map(len, tokens), dtype=np.int64, count=len(tokens))
        flat = list(chain.from_iterable(tokens))
        ids = np.fromiter(map(self._token_ids.get, flat, repeat(self._n_tokens)),
                          dtype=np.int64, count=len(flat))
        return self._features(np.repeat(np.asarray(docs, dtype=np.int64), lengths), ids, flat)

    def _features(self, rows: Any, ids: Any, words: list[str], at: Any = None) -> _Parts:
        """(row, column) of every unigram and bigram in the vocabulary, then the row of
        every token and of every token that is not a vocabulary unigram; ``ids`` is the
        token sequence, documents consecutive, ``rows`` the document of each token,
        ``words`` the tokens (``words[at[i]]`` is token i), and the text of each token that
        is not a vocabulary unigram."""
        unknown = self._n_tokens
        cols = self._uni[ids]
        keep = cols >= 0
        row_parts, col_parts = [rows[keep]], [cols[keep]]
        if self._bigrams and len(ids) > 1 and len(self._bi_keys):
            a, b = ids[:-1], ids[1:]
            pair = (rows[:-1] == rows[1:]) & (a != unknown) & (b != unknown)
            pos = self._bi_keys.get_indexer(a[pair] * self._n_tokens + b[pair])
            found = pos >= 0
            row_parts.append(rows[:-1][pair][found])
            col_parts.append(self._bi_cols[pos[found]])
        unknown_at = np.flatnonzero(~keep)
        if at is not None:
            unknown_at = at[unknown_at]
        return (np.concatenate(row_parts), np.concatenate(col_parts), rows, rows[~keep],
                [words[i] for i in unknown_at.tolist()])

    def transform(self, texts: list[str]) -> Any:
        """What the fitted vectorizer's ``transform`` returns."""
        return self.transform_and_tokens(texts)[0]

    def transform_and_tokens(self, texts: list[str]
                             ) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, list[str]]:
        """``transform(texts)``, then as ``counts_and_tokens``."""
        x, tokens, oov, oov_rows, oov_words = self.counts_and_tokens(texts)
        if self._vec.binary:
            x.data.fill(1)
        tfidf = getattr(self._vec, "_tfidf", None)  # TfidfVectorizer's weighting step
        return ((tfidf.transform(x, copy=False) if tfidf is not None else x), tokens, oov,
                oov_rows, oov_words)

    @property
    def classifier(self) -> Any:
        """The pipeline after the vectorizer: ``classifier.predict_proba(transform(t))``."""
        return self._rest

    def predict_proba(self, texts: list[str]) -> Any:
        return self._rest.predict_proba(self.transform(texts))
