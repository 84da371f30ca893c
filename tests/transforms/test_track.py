"""TrackTranches: batch statistics combined per tranche across bundles, compared with the
reference, every figure upserted into ``monitoring`` (SQLite), and a rerun replacing them."""

from __future__ import annotations

from pathlib import Path

import apache_beam as beam
import numpy as np
from apache_beam.testing.util import assert_that, equal_to

from store import monitoring
from store.database import connect
from store.session import DatabaseSettings
from tracking.metrics import compare_run
from tracking.policy import ALERT, TrackingPolicy
from tracking.profile import BatchStats, Profile
from transforms.records import RunContext
from transforms.track import TrackTranches, _ProfileFn

CLASSES = ["a", "b", "c"]
SKETCHED = {"score_histogram", "score_ks", "score_wasserstein", "length_ks", "tokens_ks"}
CTX = RunContext("run-t", "demo", "1", "ab" * 32, "2026-01-02T00:00:00+00:00")


def _batch(seed: int, n: int, shares: list[float]) -> BatchStats:
    rng = np.random.default_rng(seed)
    predicted = rng.choice(3, n, p=shares)
    return BatchStats(predicted=predicted, scores=rng.beta(6, 2, n),
                      lengths=rng.integers(50, 400, n), tokens=rng.integers(5, 60, n),
                      oov=rng.integers(0, 2, n),
                      true=np.where(rng.random(n) < 0.3, predicted, -1))


def _profile(batches: list[BatchStats]) -> Profile:
    p = Profile(classes=CLASSES)
    for b in batches:
        p.add(b)
    return p


def test_tranches_are_profiled_across_batches_and_every_figure_stored(
        pipeline: beam.Pipeline, tmp_path: Path) -> None:
    even, shifted = [0.4, 0.3, 0.3], [0.9, 0.05, 0.05]
    reference = _profile([_batch(1, 3000, even)])
    reference.reference["accuracy"] = 1.0
    stats = {"2026-01-01": [_batch(2, 200, even), _batch(3, 150, even)],
             "2026-01-02": [_batch(4, 300, shifted), _batch(5, 10, shifted)]}
    url, policy = f"sqlite:///{tmp_path / 't.db'}", TrackingPolicy()
    connect(url).init_schema()
    with pipeline as p:
        written = (p | beam.Create([(t, b) for t, bs in stats.items() for b in bs])
                   | TrackTranches(DatabaseSettings(url), CTX, CLASSES, reference.to_json(),
                                   policy))
        judged = compare_run({t: _profile(bs) for t, bs in stats.items()}, reference, policy)
        expected = {t: len(rows) for t, rows in judged.items()}
        assert_that(written, equal_to(list(expected.items())))
    db = connect(url)
    stored = monitoring.rows_of_run(db, "run-t")
    for tranche in stats:
        want = {(r.metric, r.slice): (r.value, r.n, r.status)
                for r in judged[tranche]}
        got = {(r["metric"], r["slice"]): (r["value"], r["n"], r["status"])
               for r in stored if r["tranche"] == tranche}
        assert got.keys() == want.keys()
        for key, (value, n, status) in want.items():
            assert got[key][1] == n, key
            if key[0] in SKETCHED:  # merge order changes a KLL sketch within its error
                assert abs(got[key][0] - value) <= 2 * reference.score.rank_error, key
            else:
                assert got[key][2] == status, key
                assert np.isnan(value) and np.isnan(got[key][0]) or got[key][0] == value, key
    alerts = {(r["tranche"], r["metric"]) for r in stored if r["status"] == ALERT}
    assert ("2026-01-02", "class_psi") in alerts
    assert not {m for t, m in alerts if t == "2026-01-01"}
    assert {r["model_name"] + ":" + r["model_version"] for r in stored} == {"demo:1"}
    db.close()


def _oov_batch(seed: int, n: int, start: int, planted: str) -> BatchStats:
    """A batch of documents ``start``..: each with 0-3 tokens of a pool of 5,000 rare
    out-of-vocabulary tokens and, every 10th document, ``planted`` (twice)."""
    rng = np.random.default_rng(seed)
    words: list[str] = []
    rows: list[int] = []
    for i in range(n):
        found = [f"rare{k}" for k in rng.integers(0, 5000, rng.integers(0, 4))]
        if planted and (start + i) % 10 == 0:
            found += [planted, planted]
        words += found
        rows += [i] * len(found)
    b = _batch(seed, n, [0.4, 0.3, 0.3])
    b.oov_words, b.oov_rows = words, np.asarray(rows, np.int64)
    b.doc_ids = np.asarray([f"doc-{start + i}" for i in range(n)])
    return b


def test_the_tranche_combine_finds_a_planted_new_token_with_example_ids(
        pipeline: beam.Pipeline) -> None:
    """A 2,000-document tranche in 8 batches, 200 of its documents with a token the
    reference never saw, among thousands of rare ones both have: the per-tranche combine
    names that token first, in 200 documents (10%), with ids of documents that hold it."""
    from tracking.oov import new_tokens

    reference = _profile([_oov_batch(100 + k, 500, 500 * k, "") for k in range(8)])
    batches = [("2026-01-03", _oov_batch(k, 250, 250 * k, "zorblax")) for k in range(8)]

    def top(element: tuple[str, Profile]) -> tuple[str, str, int, float, bool]:
        tranche, profile = element
        assert profile.oov_tokens is not None and reference.oov_tokens is not None
        [first, *_] = new_tokens(profile.oov_tokens, profile.n, reference.oov_tokens,
                                 reference.n)
        held = all(int(d.split("-")[1]) % 10 == 0 for d in first.examples)
        return tranche, first.token, first.docs, first.share, held and len(first.examples) == 3

    with pipeline as p:
        found = (p | beam.Create(batches)
                 | beam.CombinePerKey(_ProfileFn(CLASSES)) | beam.Map(top))
        assert_that(found, equal_to([("2026-01-03", "zorblax", 200, 0.1, True)]))
