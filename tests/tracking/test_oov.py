"""Out-of-vocabulary tokens: counted by documents in bounded memory however many
sketches merge, example ids a merge keeps exactly, the new tokens of a tranche against
its reference, and their rows in ``monitoring`` (none for a stored profile without
them)."""

from __future__ import annotations

import pickle
import zlib

import numpy as np

from tracking.metrics import compare
from tracking.oov import EXAMPLE_TOKENS, EXAMPLES, OovTokens, new_tokens, parse_example
from tracking.policy import TrackingPolicy
from tracking.profile import BatchStats, Profile


def _sketch(worker: int, docs: int = 500, rare: int = 20, planted: str = "",
            every: int = 4) -> tuple[OovTokens, dict[str, int], list[str]]:
    """A worker's sketch of ``docs`` documents, each with ``rare`` tokens seen nowhere
    else and ``planted`` in every ``every``-th; the true documents per token and the ids
    of the planted token's documents."""
    words, rows, ids = [], [], [f"w{worker}-d{i}" for i in range(docs)]
    for i in range(docs):
        tokens = [f"r{worker}x{i}x{j}" for j in range(rare)]
        if planted and i % every == 0:
            tokens += [planted, planted]  # twice in a document: one document
        words += tokens
        rows += [i] * len(tokens)
    s = OovTokens()
    s.add(words, np.asarray(rows), ids)
    return s, {planted: (docs + every - 1) // every}, ids[::every]


def test_merging_many_sketches_stays_bounded_and_keeps_the_heavy_token() -> None:
    """60 workers' sketches of 500 documents, 600,000 distinct tokens in all (megabytes
    as a dictionary), merge into one that never exceeds 32 KB (1,024 counters); the
    planted token is counted within the sketch's error and keeps the lowest-hashing
    example ids of all."""
    merged, sizes, truth, planted_ids = OovTokens(), [], 0, []
    for worker in range(60):
        s, counts, ids = _sketch(worker, planted="zorblax")
        truth += counts["zorblax"]
        planted_ids += ids
        merged.merge(pickle.loads(pickle.dumps(s)))  # as Beam ships accumulators
        sizes.append(merged.bytes)
    assert merged.pairs == 60 * (500 * 20 + 125)
    assert max(sizes) < 32_000
    assert len(merged._examples) <= 2 * EXAMPLE_TOKENS
    token, estimate, low, high = merged.frequent()[0]
    assert token == "zorblax" and low <= truth <= high
    assert abs(estimate - truth) <= 0.0035 * merged.pairs
    lowest = sorted(planted_ids, key=lambda d: zlib.crc32(d.encode()))[:EXAMPLES]
    assert merged.examples("zorblax") == tuple(lowest)


def test_new_tokens_are_frequent_now_and_rare_in_the_reference() -> None:
    """A token common in both is not new; one common now and absent before is, with its
    share of the tranche's documents and example ids; a token of one document is not."""
    ref, now = OovTokens(), OovTokens()
    ref.add(["oldword"] * 300, np.arange(300))
    words = ["oldword"] * 30 + ["newword"] * 40 + ["once"]
    rows = np.r_[np.arange(30), np.arange(40), [99]]
    now.add(words, rows, [f"d{i}" for i in range(100)])
    [found] = new_tokens(now, 100, ref, 1000)
    assert (found.token, found.docs, found.share, found.reference) == ("newword", 40, 0.4, 0.0)
    assert len(found.examples) == EXAMPLES and set(found.examples) <= {f"d{i}" for i in range(40)}


def _profile(n: int, oov_words: list[str], oov_rows: list[int], seed: int) -> Profile:
    rng = np.random.default_rng(seed)
    return Profile(classes=["a", "b"]).add(BatchStats(
        predicted=rng.integers(0, 2, n), scores=rng.uniform(0.5, 1, n),
        lengths=np.full(n, 100), tokens=np.full(n, 20), oov=np.bincount(oov_rows, minlength=n),
        true=np.full(n, -1), oov_words=oov_words, oov_rows=np.asarray(oov_rows),
        doc_ids=np.asarray([f"doc-{seed}-{i}" for i in range(n)])))


def test_a_tranches_new_tokens_are_rows_and_a_stored_profile_without_them_gives_none() -> None:
    ref = Profile.from_json(_profile(1000, ["usual"] * 500, list(range(500)), 1).to_json())
    t = _profile(400, ["usual"] * 200 + ["fresh"] * 100, list(range(200)) + list(range(100)), 2)
    rows = compare(t, ref, TrackingPolicy())
    [token] = [r for r in rows if r.metric == "oov_token"]
    assert (token.slice, token.n, token.value, token.threshold) == ("fresh", 100, 0.25, 0.0)
    examples = [parse_example(r.slice) for r in rows if r.metric == "oov_token_example"]
    assert len(examples) == EXAMPLES
    assert all(tok == "fresh" and int(d.rsplit("-", 1)[1]) < 100 for tok, d in examples)
    old = ref.to_json()
    del old["oov_tokens"]
    rows = compare(t, Profile.from_json(old), TrackingPolicy())
    assert not [r for r in rows if r.metric.startswith("oov_token")]
    assert [r.metric for r in rows if r.metric == "oov_share"] == ["oov_share"]


def _documents(n: int, seed: int, tokens: int = 200, share: float = 0.01,
               ) -> tuple[list[str], np.ndarray, list[str]]:
    """``n`` documents, each holding each of ``tokens`` tokens with chance ``share``."""
    rng = np.random.default_rng(seed)
    has = rng.random((n, tokens)) < share
    rows, which = np.nonzero(has)
    return [f"tok{t}" for t in which.tolist()], rows, [f"d{seed}-{i}" for i in range(n)]


def test_tokens_as_frequent_as_in_the_reference_are_rarely_new() -> None:
    """200 tokens each in 1% of a 5,000-document reference and of 1,000-document
    tranches: sampling noise (a token at 1.9% against 0.8% is common) makes a token new
    in at most the test's 0.001 of tranches: at most 2 of 300 (0.3 expected)."""
    reference = OovTokens()
    reference.add(*_documents(5000, seed=1))
    flagged = []
    for seed in range(2, 302):
        tranche = OovTokens()
        tranche.add(*_documents(1000, seed=seed))
        flagged += [(seed, t.token) for t in new_tokens(tranche, 1000, reference, 5000)]
    assert len(flagged) <= 2, flagged
    words, rows, ids = _documents(1000, seed=12)
    tranche = OovTokens()
    tranche.add(words + ["zorblax"] * 30, np.r_[rows, np.arange(30)], ids)
    assert [t.token for t in new_tokens(tranche, 1000, reference, 5000)] == ["zorblax"]


def test_long_tokens_and_ids_are_kept_short() -> None:
    """Tokens as long as a text (a base64 blob) and long ids cost their first 60 and 80
    characters: 2,000 documents of 2,400-character tokens stay a few kilobytes."""
    s = OovTokens()
    words = [("x" * 2400) + str(i) for i in range(2000)]
    s.add(words, np.arange(2000), ["i" * 250 + str(i) for i in range(2000)])
    assert s.bytes < 40_000
    assert {len(t) for t, *_ in s.frequent()} == {60}
    assert all(len(d) <= 80 for d in s.examples("x" * 60))
