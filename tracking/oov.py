"""Out-of-vocabulary tokens: which ones, in how many documents, and a few examples.

``OovTokens`` counts, per out-of-vocabulary token, the documents that contain it in an
Apache DataSketches frequent-items sketch (``frequent_strings_sketch``, a map of at most
``2**LG_MAP`` counters): its estimate of a token's documents is within
``epsilon x`` (all document-token pairs counted) of the truth, and every token above
that error is kept, whatever the number of documents. For the tokens the sketch counts
most, it keeps ``EXAMPLES`` example document ids: the ones whose id hashes lowest (a
uniform, deterministic sample that two sketches merge exactly); at most
``2 * EXAMPLE_TOKENS`` tokens keep examples, the rest are dropped by their sketch
estimate (ties by token). A token dropped from a partial merge loses the examples it
had there, so the examples of a token that was not among the most frequent everywhere
can depend on how the workers' sketches were merged: they are illustrations, not a
record; its counts never do beyond the sketch's error. Tokens are kept to
``TOKEN_CHARS`` characters and ids to ``ID_CHARS``. So a sketch, and the merge of any
number of them across workers, stays a few tens of kilobytes.

``new_tokens`` compares a tranche's sketch with the reference's: the tokens whose share
of documents, at the least the tranche's sketch allows, grew most above the most the
reference's allows, i.e. tokens frequent now and rare or absent in the reference.
"""

from __future__ import annotations

import base64
import heapq
import json
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from datasketches import frequent_items_error_type, frequent_strings_sketch

LG_MAP = 10  # 1,024 counters: error about 0.34% of the document-token pairs counted
EXAMPLES = 3  # example document ids kept per token
EXAMPLE_TOKENS = 128  # tokens that keep examples
TOP = 10  # new tokens a tranche reports
NEW_ALPHA = 1e-3  # the level of the evidence that a token is new
TOKEN_CHARS, ID_CHARS = 60, 80  # longest token and example id stored


def _hash(doc_id: str) -> int:
    return zlib.crc32(doc_id.encode("utf-8", "surrogatepass"))


@dataclass(frozen=True)
class NewToken:
    """A token frequent in a tranche and rarer, or absent, in the reference."""

    token: str
    docs: int  # documents of the tranche containing it (the sketch's estimate)
    share: float  # docs / the tranche's documents
    low: float  # the share's bounds from the sketch's error
    high: float
    reference: float  # its share of the reference's documents (estimate)
    examples: tuple[str, ...]  # example document ids


class OovTokens:
    def __init__(self) -> None:
        self._s = frequent_strings_sketch(LG_MAP)
        self._examples: dict[str, list[tuple[int, str]]] = {}  # token -> (hash, id), lowest

    def add(self, words: Sequence[str], rows: np.ndarray,
            doc_ids: Sequence[Any] | None = None) -> None:
        """Count each document once per out-of-vocabulary token it contains: ``words``
        are its occurrences and ``rows`` the document (index into ``doc_ids``) of each.
        Tokens are kept to ``TOKEN_CHARS`` characters, ids to ``ID_CHARS``."""
        if not len(words):
            return
        import pandas as pd

        codes, tokens = pd.factorize(
            np.fromiter((w[:TOKEN_CHARS] for w in words), dtype=object, count=len(words)))
        width = len(tokens)
        pairs = np.unique(np.asarray(rows, dtype=np.int64) * width + codes)  # (doc, token)
        token_of, doc_of = pairs % width, pairs // width
        docs = np.bincount(token_of, minlength=width)
        for i in np.flatnonzero(docs).tolist():
            self._s.update(str(tokens[i]), int(docs[i]))
        if doc_ids is None:
            return
        by_count = sorted(range(width), key=lambda i: (-int(docs[i]), str(tokens[i])))
        candidates = np.asarray(by_count[:EXAMPLE_TOKENS], dtype=np.int64)
        chosen = np.isin(token_of, candidates)
        token_of, doc_of = token_of[chosen], doc_of[chosen]
        names = {d: str(doc_ids[d])[:ID_CHARS] for d in np.unique(doc_of).tolist()}
        hashes = {d: _hash(name) for d, name in names.items()}
        hashed = np.fromiter((hashes[d] for d in doc_of.tolist()), dtype=np.int64,
                             count=len(doc_of))
        order = np.lexsort((hashed, token_of))  # by token, then lowest hash first
        token_of, doc_of, hashed = token_of[order], doc_of[order], hashed[order]
        starts = np.flatnonzero(np.r_[True, token_of[1:] != token_of[:-1]]) \
            if len(token_of) else np.zeros(0, dtype=np.int64)
        ends = np.r_[starts[1:], len(token_of)]
        found = {str(tokens[token_of[at]]): [(int(hashed[i]), names[int(doc_of[i])])
                                             for i in range(at, min(stop, at + EXAMPLES))]
                 for at, stop in zip(starts.tolist(), ends.tolist())}
        self._add_examples(found)

    def merge(self, other: OovTokens) -> None:
        if not other._s.is_empty():
            self._s.merge(other._s)
        self._add_examples(other._examples)

    def _add_examples(self, found: dict[str, list[tuple[int, str]]]) -> None:
        for word, examples in found.items():
            kept = self._examples.get(word, []) + examples
            self._examples[word] = heapq.nsmallest(EXAMPLES, set(kept))
        if len(self._examples) > 2 * EXAMPLE_TOKENS:  # keep the most frequent tokens'
            kept_words = heapq.nlargest(EXAMPLE_TOKENS, self._examples,
                                        key=lambda w: (self._s.get_estimate(w), w))
            self._examples = {w: self._examples[w] for w in kept_words}

    @property
    def pairs(self) -> int:
        """Document-token pairs counted."""
        return int(self._s.total_weight)

    @property
    def bytes(self) -> int:
        """Serialised size: the bound on what a sketch costs to keep and to ship."""
        return len(self.to_text())

    def frequent(self) -> list[tuple[str, int, int, int]]:
        """(token, estimate, lower bound, upper bound) of the tokens the sketch keeps,
        most documents first."""
        found = self._s.get_frequent_items(frequent_items_error_type.NO_FALSE_NEGATIVES, 0)
        return sorted(((str(w), int(e), int(lo), int(hi)) for w, e, lo, hi in found),
                      key=lambda x: (-x[1], x[0]))

    def estimate(self, token: str) -> int:
        return int(self._s.get_estimate(token))

    def upper_bound(self, token: str) -> int:
        """The most documents the token can be in (the sketch's error for an absent one)."""
        return int(self._s.get_upper_bound(token))

    def examples(self, token: str) -> tuple[str, ...]:
        return tuple(doc for _, doc in self._examples.get(token, []))

    def to_text(self) -> str:
        return json.dumps({"sketch": base64.b64encode(self._s.serialize()).decode(),
                           "examples": self._examples}, separators=(",", ":"))

    @classmethod
    def from_text(cls, text: str) -> OovTokens:
        data = json.loads(text)
        out = cls()
        out._s = frequent_strings_sketch.deserialize(base64.b64decode(data["sketch"]))
        out._examples = {w: [(int(h), str(d)) for h, d in ex]
                         for w, ex in data.get("examples", {}).items()}
        return out

    def __getstate__(self) -> dict[str, Any]:
        return {"text": self.to_text()}

    def __setstate__(self, state: dict[str, Any]) -> None:
        other = OovTokens.from_text(state["text"])
        self._s, self._examples = other._s, other._examples


def example_slice(token: str, doc_id: str) -> str:
    """The ``monitoring`` slice of one example: token and document id, as JSON."""
    return json.dumps([token, doc_id], ensure_ascii=False)


def parse_example(slice_: str) -> tuple[str, str] | None:
    """(token, document id) of an ``example_slice``; None for anything else."""
    try:
        token, doc_id = json.loads(slice_)
    except (ValueError, TypeError):
        return None
    return str(token), str(doc_id)


def new_tokens(mine: OovTokens, n: int, reference: OovTokens, ref_n: int,
               top: int = TOP, alpha: float = NEW_ALPHA) -> list[NewToken]:
    """The ``top`` tokens of a tranche of ``n`` documents whose share of documents most
    exceeds the largest share they could have in the reference of ``ref_n`` documents,
    with evidence: the tranche's count (the sketch's lower bound, at least 2) against
    the reference's (its upper bound, at least 1) passes a one-sided Fisher exact test
    at ``alpha`` divided among the candidates, so neither a sketch's error nor sampling
    noise in either makes a token new."""
    from scipy import stats

    if not n or not ref_n:
        return []
    candidates = []
    for token, docs, low, high in mine.frequent():
        before = max(reference.upper_bound(token), 1) / ref_n  # an unseen token: rare
        if low >= 2 and low / n > before:
            candidates.append((low / n - before, token, docs, low, high, before))
    if not candidates:
        return []
    lows = np.array([c[3] for c in candidates])
    before_docs = np.array([round(c[5] * ref_n) for c in candidates])
    # one-sided Fisher exact test: P(X >= low), X the tranche's share of the documents
    # of both that hold the token, were the token as frequent in both
    p = stats.hypergeom.sf(lows - 1, n + ref_n, lows + before_docs, n)
    found = sorted((c for c, pv in zip(candidates, p) if pv < alpha / len(candidates)),
                   key=lambda x: (-x[0], x[1]))
    out: dict[str, NewToken] = {}  # by the token as stored: at most TOKEN_CHARS
    for _, token, docs, low, high, _before in found:
        short = token[:TOKEN_CHARS]
        if short not in out and len(out) < top:
            out[short] = NewToken(short, docs, docs / n, low / n, min(1.0, high / n),
                                  reference.estimate(token) / ref_n,
                                  tuple(d[:ID_CHARS] for d in mine.examples(token)))
    return list(out.values())
