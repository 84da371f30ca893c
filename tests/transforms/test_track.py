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
from transforms.track import TrackTranches

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
