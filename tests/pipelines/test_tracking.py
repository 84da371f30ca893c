"""Tracking end to end: no false alarms on the training distribution, the matching alert
for each kind of shift, retraining requests with exit 6, a cooldown, and a report whose
numbers are the monitoring table's (SQLite, the real CLI)."""

from __future__ import annotations

import html
import json
import random
import re
import time
from pathlib import Path
from typing import Any

import pytest

from landing.samples import LABELS, make_docs, write_tranche
from store import run_records
from store.database import connect
from tests.data import sqlite_rows
from tests.pipelines.helpers import run_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> str:
    base = tmp_path_factory.mktemp("tracked")
    train = base / "train.jsonl"
    train.write_text("".join(json.dumps(d) + "\n" for d in make_docs(4000, seed=100, prefix="t")))
    root = str(base / "registry")
    result = run_cli("train", "--docs", str(train), "--name", "demo", "--registry", root)
    assert result.rc == 0, result.err
    assert (Path(root) / "demo" / "1" / "profile.json").exists()
    return root


def _score(tmp: Path, registry: str, day: str, docs: list[dict[str, Any]] | None,
           *extra: str) -> Any:
    """Write ``docs`` as the day's tranche (None: leave its files as they are), score it."""
    root = tmp / "landing"
    if docs is not None:
        write_tranche(str(root), day, docs, "jsonl")
    return run_cli("score", "--date", day, "--input-root", str(root), "--registry", registry,
                   "--db", f"sqlite:///{tmp / 's.db'}", "--output-dir", str(tmp / "out"),
                   *extra)


def _alerts(tmp: Path, day: str) -> set[str]:
    return {r[0] for r in sqlite_rows(tmp / "s.db", "SELECT metric FROM monitoring WHERE "
                                      f"tranche = '{day}' AND status = 'alert'")}


def _status(tmp: Path, day: str, metric: str) -> str:
    [(status,)] = sqlite_rows(tmp / "s.db", f"SELECT status FROM monitoring WHERE tranche = "
                                            f"'{day}' AND metric = '{metric}' AND slice = ''")
    return str(status)


def _register(tmp: Path, model: Any, name: str, reference_docs: Any) -> str:
    """``model`` saved and registered as ``name`` with a reference of ``reference_docs``
    (the real CLI); the registry's path."""
    import joblib

    joblib.dump(model, tmp / f"{name}.joblib")
    reference = tmp / "reference.jsonl"
    reference.write_text("".join(json.dumps(d) + "\n" for d in reference_docs))
    registry = str(tmp / "registry")
    registered = run_cli("models", "register", "--file", str(tmp / f"{name}.joblib"),
                         "--name", name, "--registry", registry, "--reference", str(reference))
    assert registered.rc == 0, registered.err
    return registry


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_training_distribution_raises_no_alert_and_no_trigger(
        registry: str, tmp_path: Path, seed: int) -> None:
    result = _score(tmp_path, registry, "2026-09-01", list(make_docs(2500, seed=seed)))
    assert result.rc == 0, result.err
    assert _alerts(tmp_path, "2026-09-01") == set()
    assert sqlite_rows(tmp_path / "s.db", "SELECT count(*) FROM retrain_triggers") == [(0,)]
    assert _status(tmp_path, "2026-09-01", "accuracy") == "ok"


def test_a_class_shift_alerts_and_asks_for_retraining_on_its_second_run(
        registry: str, tmp_path: Path) -> None:
    shifted = [d for d in make_docs(6000, seed=4) if d["label"] in ("billing", "shipping")]
    first = _score(tmp_path, registry, "2026-09-02", shifted[:1200])
    assert first.rc == 0, first.err  # one breach is no trigger yet
    assert "class_psi" in _alerts(tmp_path, "2026-09-02")
    second = _score(tmp_path, registry, "2026-09-03", shifted[1200:2400])
    assert second.rc == 6, second.err
    assert "class_psi alert in 2 tranches in a row (2026-09-02 to 2026-09-03)" in second.err
    [(reasons, status)] = sqlite_rows(tmp_path / "s.db",
                                      "SELECT reasons, status FROM retrain_triggers")
    assert "class_psi" in reasons and status == "requested"


def test_a_drift_streak_needs_consecutive_runs_in_a_row(registry: str, tmp_path: Path) -> None:
    """tracking.consecutive 3: shifted, in-distribution, shifted, shifted is no request
    (the streak was broken); a third shifted run in a row is."""
    shifted = [d for d in make_docs(8000, seed=14) if d["label"] in ("billing", "shipping")]
    normal = list(make_docs(1000, seed=15, prefix="n"))
    runs = [("2026-10-01", shifted[:600]), ("2026-10-02", normal),
            ("2026-10-03", shifted[600:1200]), ("2026-10-04", shifted[1200:1800]),
            ("2026-10-05", shifted[1800:2400])]
    codes = [_score(tmp_path, registry, day, docs, "--tracking-consecutive", "3").rc
             for day, docs in runs]
    assert codes == [0, 0, 0, 0, 6], codes
    assert _alerts(tmp_path, "2026-10-02") == set()
    [(reasons,)] = sqlite_rows(tmp_path / "s.db", "SELECT reasons FROM retrain_triggers")
    assert "class_psi alert in 3 tranches in a row (2026-10-03 to 2026-10-05)" in reasons


def test_a_drifted_day_scored_again_is_one_day_and_a_backfill_of_two_is_a_streak(
        registry: str, tmp_path: Path) -> None:
    """The streak counts days of data, not runs: a drifted day rescored (a late file,
    then ``--force``) asks for nothing, while one run scoring two drifted days does."""
    shifted = [d for d in make_docs(8000, seed=16) if d["label"] in ("billing", "shipping")]
    once = tmp_path / "once"
    assert _score(once, registry, "2026-10-11", shifted[:600]).rc == 0
    write_tranche(str(once / "landing"), "2026-10-11", shifted[600:1200], "jsonl", "late")
    again = _score(once, registry, "2026-10-11", None)  # the late file: rescored
    forced = _score(once, registry, "2026-10-11", None, "--force")
    assert (again.rc, forced.rc) == (0, 0), again.err + forced.err
    assert "class_psi" in _alerts(once, "2026-10-11")
    assert sqlite_rows(once / "s.db", "SELECT count(*) FROM runs WHERE status <> 'skipped'"
                       ) == [(3,)]
    assert sqlite_rows(once / "s.db", "SELECT count(*) FROM retrain_triggers") == [(0,)]
    backfill = tmp_path / "backfill"
    for day, docs in (("2026-10-12", shifted[1200:1800]), ("2026-10-13", shifted[1800:2400])):
        write_tranche(str(backfill / "landing"), day, docs, "jsonl")
    both = run_cli("score", "--from", "2026-10-12", "--to", "2026-10-13", "--input-root",
                   str(backfill / "landing"), "--registry", registry, "--db",
                   f"sqlite:///{backfill / 's.db'}", "--output-dir", str(backfill / "out"))
    assert both.rc == 6, both.err
    assert "class_psi alert in 2 tranches in a row (2026-10-12 to 2026-10-13)" in both.err


def test_a_streak_is_not_broken_by_runs_that_score_nothing_or_another_model(
        registry: str, tmp_path: Path) -> None:
    """Hundreds of runs between two drifted nights (a schedule every few minutes finding
    nothing new, other models sharing the database) leave the streak whole."""
    shifted = [d for d in make_docs(6000, seed=17) if d["label"] in ("billing", "shipping")]
    assert _score(tmp_path, registry, "2026-10-21", shifted[:600]).rc == 0
    db = connect(f"sqlite:///{tmp_path / 's.db'}")
    try:
        for i in range(300):
            run_id = f"between-{i:03d}"
            run_records.start(db, run_id, {}, "demo:1" if i % 2 else "other:4")
            run_records.finish(db, run_id, run_records.SKIPPED, {})
    finally:
        db.close()
    second = _score(tmp_path, registry, "2026-10-22", shifted[600:1200])
    assert second.rc == 6, second.err
    assert "class_psi alert in 2 tranches in a row (2026-10-21 to 2026-10-22)" in second.err


def test_out_of_vocabulary_text_alerts(registry: str, tmp_path: Path) -> None:
    """Unknown words alert, and the report names the new token a quarter of the texts
    share, with ids of documents that contain it."""
    rng = random.Random(5)
    docs = [{"id": f"oov-{i}", "text": " ".join(
        "".join(rng.choice("qxzvwjk") for _ in range(7)) for _ in range(40))
        + (" Zorblaxine" if i % 4 == 0 else "")} for i in range(1000)]
    result = _score(tmp_path, registry, "2026-09-04", docs, "--max-dead-letter-ratio", "1")
    assert result.rc == 0, result.err
    assert {"oov_share", "tokens_ks"} <= _alerts(tmp_path, "2026-09-04")
    [(run_id,)] = sqlite_rows(tmp_path / "s.db", "SELECT run_id FROM runs")
    page = (tmp_path / "out" / "_reports" / f"{run_id}.html").read_text()
    line = re.search(r"Top new out-of-vocabulary tokens: <code>zorblaxine</code> "
                     r"\((\d+) docs, share ([\d.]+)% where new, e\.g\. doc ids ([^)]*)\)", page)
    assert line is not None, page[:3000]
    assert 250 - 30 <= int(line[1]) <= 250 and abs(float(line[2]) - 25) <= 3
    ids = line[3].split(", ")
    assert len(ids) == 2 and all(int(d.removeprefix("oov-")) % 4 == 0 for d in ids)


def test_corrupted_labels_trigger_retraining_once_within_the_cooldown(
        registry: str, tmp_path: Path) -> None:
    marker = tmp_path / "retrained"
    def corrupted(seed: int) -> list[dict[str, Any]]:
        docs = list(make_docs(1000, seed=seed))
        for d in docs:  # every label moved to the next class
            d["label"] = LABELS[(LABELS.index(d["label"]) + 1) % len(LABELS)]
        return docs

    command = ["--tracking-command", f"touch {marker}"]
    first = _score(tmp_path, registry, "2026-09-05", corrupted(6), *command)
    assert first.rc == 6, first.err
    assert _status(tmp_path, "2026-09-05", "accuracy") == "alert"
    assert marker.exists()
    [(status, code)] = sqlite_rows(tmp_path / "s.db",
                                   "SELECT status, command_exit_code FROM retrain_triggers")
    assert (status, code) == ("command_succeeded", 0)
    second = _score(tmp_path, registry, "2026-09-06", corrupted(7), *command)
    assert second.rc == 0, second.err  # inside the cooldown: no second request
    assert _status(tmp_path, "2026-09-06", "accuracy") == "alert"
    assert sqlite_rows(tmp_path / "s.db", "SELECT count(*) FROM retrain_triggers") == [(1,)]
    run_ids = [r for (r,) in sqlite_rows(tmp_path / "s.db",
                                         "SELECT run_id FROM runs ORDER BY started_at")]
    pages = [(tmp_path / "out" / "_reports" / f"{r}.html").read_text() for r in run_ids]
    assert "<p class='status retrain'>" in pages[0] and "accuracy 0" in pages[0]
    assert "<p class='status drift'>" in pages[1] and "accuracy on 2026-09-06" in pages[1]


@pytest.mark.parametrize("where", ["compare", "profile"])
def test_a_tracking_error_loses_no_score(registry: str, tmp_path: Path, where: str,
                                         monkeypatch: pytest.MonkeyPatch,
                                         caplog: pytest.LogCaptureFixture) -> None:
    """Figures that cannot be computed (or a batch's statistics that cannot be added)
    fail nothing: the tranche completes with every score, the run succeeds (exit 0), the
    summary says tracking failed and the log names the tranche."""
    import tracking.metrics
    from tracking.profile import Profile

    def broken(*_: Any, **__: Any) -> Any:
        raise RuntimeError("injected")

    monkeypatch.setattr(*((tracking.metrics, "compare_run", broken) if where == "compare"
                          else (Profile, "add", broken)))
    result = _score(tmp_path, registry, "2026-09-20", list(make_docs(300, seed=41)),
                    "--workers", "1")
    assert result.rc == 0, result.err
    assert "tracking failed" in result.out and "the scores stand" in result.out
    assert "RuntimeError: injected" in caplog.text
    if where == "compare":
        assert "tranche(s) 2026-09-20 could not be computed or recorded" in caplog.text
    db = tmp_path / "s.db"
    assert sqlite_rows(db, "SELECT count(*) FROM predictions") == [(300,)]
    assert sqlite_rows(db, "SELECT status FROM tranches") == [("completed",)]
    assert sqlite_rows(db, "SELECT status FROM runs") == [("succeeded",)]


def test_a_small_shifted_tranche_alerts_and_a_tiny_one_is_insufficient(
        registry: str, tmp_path: Path) -> None:
    """Overwhelming evidence alerts at any size (50 texts of one class of five); a tranche
    whose tests cannot reach significance is insufficient, and so is the report."""
    shifted = [d for d in make_docs(400, seed=8) if d["label"] == "billing"]
    result = _score(tmp_path, registry, "2026-09-07", shifted[:50])
    assert result.rc == 0, result.err
    assert "class_psi" in _alerts(tmp_path, "2026-09-07")
    tiny = _score(tmp_path, registry, "2026-09-11", shifted[50:51])
    assert tiny.rc == 0, tiny.err
    assert _alerts(tmp_path, "2026-09-11") == set()
    assert _status(tmp_path, "2026-09-11", "class_psi") == "insufficient"
    last = sqlite_rows(tmp_path / "s.db", "SELECT run_id FROM runs ORDER BY started_at")[-1][0]
    page = (tmp_path / "out" / "_reports" / f"{last}.html").read_text()
    assert "<p class='status insufficient'><b>INSUFFICIENT</b>" in page


def test_a_report_regenerated_later_is_as_of_its_run(registry: str, tmp_path: Path) -> None:
    """Run 1 drifts, run 2 drifts again and requests retraining, run 3 comes later: run
    1's report regenerated afterwards still says DRIFT, charts runs up to run 1 only, and
    run 2's lists each reason of its own request once."""
    shifted = [d for d in make_docs(6000, seed=40) if d["label"] in ("billing", "shipping")]
    days = ("2026-11-01", "2026-11-02", "2026-11-03")
    codes = [_score(tmp_path, registry, day, shifted[i * 600:(i + 1) * 600]).rc
             for i, day in enumerate(days)]
    assert codes[:2] == [0, 6], codes
    runs = [r for (r,) in sqlite_rows(tmp_path / "s.db", "SELECT run_id FROM runs ORDER BY "
                                                         "started_at")]
    db = ["--db", f"sqlite:///{tmp_path / 's.db'}"]
    for run_id in runs[:2]:
        again = run_cli("report", run_id, *db, "--output", str(tmp_path / f"{run_id}.html"))
        assert again.rc == 0, again.err
    first = (tmp_path / f"{runs[0]}.html").read_text()
    second = (tmp_path / f"{runs[1]}.html").read_text()
    assert "<p class='status drift'>" in first and "RETRAIN" not in first
    assert "over the last 1 runs" in first
    assert "<p class='status retrain'>" in second and "over the last 2 runs" in second
    banner = second.split("<p class='status")[1].split("</p>")[0]
    assert banner.count("class_psi alert in 2 tranches in a row") == 1


def test_the_report_shows_the_monitoring_tables_numbers(registry: str, tmp_path: Path) -> None:
    result = _score(tmp_path, registry, "2026-09-08", list(make_docs(600, seed=9)))
    assert result.rc == 0, result.err
    [(run_id,)] = sqlite_rows(tmp_path / "s.db", "SELECT run_id FROM runs")
    page = (tmp_path / "out" / "_reports" / f"{run_id}.html").read_text()
    assert f"report {tmp_path / 'out' / '_reports' / run_id}.html" in result.out
    assert len(page.encode()) < 2 << 20 and page.count("data:image/png;base64,") >= 3
    assert "<p class='status ok'>" in page
    for heading in ("Class shares against the reference", "Scores against the reference",
                    "Accuracy over the last", "Drift metrics over the last runs",
                    "Features whose importance moved most", "Dead letters",
                    "Every figure of the run"):
        assert f"<h2>{heading}" in page, heading
    shown = {(html.unescape(m[0]), html.unescape(m[1]), html.unescape(m[2])): m[3]
             for m in re.findall(r"<tr data-tranche='([^']*)' data-metric='([^']*)' "
                                 r"data-slice='([^']*)'>(?:<td>[^<]*</td>){3}"
                                 r"<td class='value'>([^<]*)</td>", page)}
    stored = sqlite_rows(tmp_path / "s.db", "SELECT tranche, metric, slice, value FROM "
                                            "monitoring WHERE metric NOT LIKE 'score_hist%' "
                                            "AND metric != 'oov_token_example'")
    assert len(shown) == len(stored) > 20
    for tranche, metric, slice_, value in stored:
        text = shown[(tranche, metric, slice_)]
        assert text == ("" if value is None else f"{value:.4g}"), (metric, slice_)
    again = run_cli("report", run_id, "--db", f"sqlite:///{tmp_path / 's.db'}",
                    "--output", str(tmp_path / "again.html"))
    assert again.rc == 0 and (tmp_path / "again.html").read_text() == page


def test_a_model_without_coefficients_gets_permutation_importance(tmp_path: Path) -> None:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import Pipeline

    docs = list(make_docs(1500, seed=30, prefix="rf"))
    forest = Pipeline([("tfidf", TfidfVectorizer(max_features=300)),
                       ("clf", RandomForestClassifier(n_estimators=30, random_state=0))])
    forest.fit([d["text"] for d in docs], [d["label"] for d in docs])
    registry = _register(tmp_path, forest, "forest", make_docs(1200, seed=31))
    profile = json.loads((Path(registry) / "forest" / "1" / "profile.json").read_text())
    assert profile["reference"]["importance_kind"] == "permutation"
    vocabulary = set(forest.named_steps["tfidf"].vocabulary_)
    assert {name for _, name, _ in profile["importance_top"]} <= vocabulary
    tranche = list(make_docs(2500, seed=32))
    judged = _score(tmp_path, registry, "2026-09-09", tranche, "--model", "forest",
                    "--tracking-permutation-rows", "256")
    assert judged.rc == 0, judged.err
    assert _status(tmp_path, "2026-09-09", "importance_ndcg") == "ok"
    changes = sqlite_rows(tmp_path / "s.db", "SELECT slice FROM monitoring WHERE tranche = "
                                             "'2026-09-09' AND metric = 'importance_change'")
    assert 0 < len(changes) <= 10 and {c for (c,) in changes} <= vocabulary
    few = _score(tmp_path, registry, "2026-09-10", tranche, "--model", "forest")
    assert few.rc == 0, few.err  # 32 permuted rows of one batch: too few to judge
    assert _status(tmp_path, "2026-09-10", "importance_ndcg") == "insufficient"


def test_a_model_with_nan_weights_dead_letters_its_records_and_the_run_goes_on(
        tmp_path: Path) -> None:
    """Probabilities that are not finite are per-record dead letters; tracking, whose
    importance figures the NaN weights make NaN too, records what is finite and fails
    nothing; the reference leaves those texts out."""
    import numpy as np
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    docs = list(make_docs(1500, seed=40, prefix="nan"))
    model = Pipeline([("tfidf", TfidfVectorizer(max_features=500)),
                      ("clf", LogisticRegression(max_iter=300))])
    model.fit([d["text"] for d in docs], [d["label"] for d in docs])
    vocabulary = model.named_steps["tfidf"].vocabulary_
    word = sorted(vocabulary)[len(vocabulary) // 2]
    model.named_steps["clf"].coef_[:, vocabulary[word]] = np.nan
    registry = _register(tmp_path, model, "nanw", make_docs(800, seed=41))
    tranche = list(make_docs(600, seed=42)) + [
        {"id": f"w{i}", "text": f"a text with {word} in it, number {i}", "label": LABELS[0]}
        for i in range(12)]
    result = _score(tmp_path, registry, "2026-09-11", tranche, "--model", "nanw",
                    "--max-dead-letter-ratio", "0.5")
    assert result.rc == 0, result.err
    dead = sqlite_rows(tmp_path / "s.db", "SELECT reason FROM dead_letters")
    assert len(dead) >= 12 and all("finite" in r for (r,) in dead)
    values = sqlite_rows(tmp_path / "s.db", "SELECT value FROM monitoring")
    assert values and all(v is not None and np.isfinite(v) for (v,) in values)


def test_blank_labels_are_no_labels_to_tracking(registry: str, tmp_path: Path) -> None:
    """Half the tranche with ``"label": ""`` (an export's empty cells): accuracy is the
    other half's, and no label counts as outside the model's classes."""
    docs = list(make_docs(1200, seed=43))
    for d in docs[::2]:
        d["label"] = ""
    result = _score(tmp_path, registry, "2026-09-12", docs)
    assert result.rc == 0, result.err
    [(n, share)] = sqlite_rows(tmp_path / "s.db", "SELECT n, value FROM monitoring WHERE "
                                                  "metric = 'unknown_label_share'")
    assert (n, share) == (600, 0.0)
    assert "unknown_label_share" not in _alerts(tmp_path, "2026-09-12")


def test_a_run_with_nothing_to_score_writes_its_report_and_a_report_creates_no_database(
        registry: str, tmp_path: Path) -> None:
    """Every run has a report (a rerun that skips everything, a missing day: the
    report says why nothing was scored); ``beamscore report`` against a database that
    does not exist says so and creates none."""
    docs = list(make_docs(300, seed=44))
    assert _score(tmp_path, registry, "2026-09-13", docs).rc == 0
    again = run_cli("score", "--from", "2026-09-13", "--to", "2026-09-14", "--input-root",
                    str(tmp_path / "landing"), "--registry", registry,
                    "--db", f"sqlite:///{tmp_path / 's.db'}", "--output-dir", str(tmp_path / "out"))
    assert again.rc == 3, again.err  # 2026-09-14 is missing
    [line] = [x for x in again.out.splitlines() if x.startswith("report ")]
    page = Path(line.split(" ", 1)[1]).read_text()
    assert "skipped" in page
    missing = tmp_path / "none" / "no.db"
    (tmp_path / "none").mkdir()
    result = run_cli("report", "some-run", "--db", f"sqlite:///{missing}")
    assert result.rc == 1 and "no runs recorded" in result.err
    assert not missing.exists()


def _corrupted(seed: int, n: int) -> list[dict[str, Any]]:
    docs = list(make_docs(n, seed=seed))
    for d in docs:  # every label moved to the next class
        d["label"] = LABELS[(LABELS.index(d["label"]) + 1) % len(LABELS)]
    return docs


@pytest.mark.slow
def test_a_backfill_stopped_in_a_later_wave_has_asked_for_what_its_first_wave_called_for(
        registry: str, tmp_path: Path) -> None:
    """Three days in three waves, the first with every label wrong: the accuracy alert
    of wave 1 asks for retraining as wave 1 ends, so a SIGTERM in wave 2 loses no
    request; ``runs show`` of the stopped run still lists the finished wave's counts."""
    root = tmp_path / "landing"
    write_tranche(str(root), "2026-06-01", _corrupted(21, 600), "jsonl")
    for k, day in enumerate(("2026-06-02", "2026-06-03")):
        write_tranche(str(root), day, list(make_docs(600, seed=22 + k)), "jsonl")
    marker = tmp_path / "retrained"
    db = tmp_path / "s.db"
    proc = _start_tracked(
        ["score", "--from", "2026-06-01", "--to", "2026-06-03", "--input-root", str(root),
         "--registry", registry, "--db", f"sqlite:///{db}", "--output-dir",
         str(tmp_path / "out"), "--wave-records", "1", "--sink-max-rows-per-second",
         "400", "--sink-batch-rows", "100", "--tracking-command", f"touch {marker}"])
    _stop_once_requested(proc, db)
    [(reasons, status)] = sqlite_rows(db, "SELECT reasons, status FROM retrain_triggers")
    assert "accuracy" in reasons and "2026-06-01" in reasons
    assert status == "command_succeeded" and marker.exists()
    assert sqlite_rows(db, "SELECT count(*) FROM monitoring WHERE tranche = '2026-06-01' "
                           "AND metric = 'empty_share'")[0][0] >= 1  # the launcher's figure
    [(run_id,)] = sqlite_rows(db, "SELECT run_id FROM runs")
    shown = run_cli("runs", "show", run_id, "--db", f"sqlite:///{db}", model=None)
    assert "tranche 2026-06-01: read 600" in shown.out, shown.out


@pytest.mark.slow
def test_a_drift_streak_within_a_first_wave_asks_for_retraining_as_it_ends(
        registry: str, tmp_path: Path) -> None:
    """Two shifted days in wave 1 and a third in wave 2: the streak of wave 1's days asks
    for retraining when wave 1 ends (wave 2's day, leased but not scored yet, is no day
    of it), so a stop in wave 2 loses nothing."""
    shifted = [d for d in make_docs(8000, seed=31) if d["label"] in ("billing", "shipping")]
    days = ["2026-11-01", "2026-11-02", "2026-11-03"]
    root = tmp_path / "landing"
    for k, day in enumerate(days):
        write_tranche(str(root), day, shifted[k * 600:(k + 1) * 600], "jsonl")
    db = tmp_path / "s.db"
    proc = _start_tracked(["score", "--from", days[0], "--to", days[-1], "--input-root",
                           str(root), "--registry", registry, "--db", f"sqlite:///{db}",
                           "--output-dir", str(tmp_path / "out"), "--wave-records", "1000",
                           "--sink-max-rows-per-second", "400", "--sink-batch-rows", "100"])
    _stop_once_requested(proc, db)
    [(reasons,)] = sqlite_rows(db, "SELECT reasons FROM retrain_triggers")
    assert "class_psi alert in 2 tranches in a row (2026-11-01 to 2026-11-02)" in reasons


@pytest.mark.slow
def test_a_stop_while_the_retraining_command_runs_stops_it_and_keeps_the_report(
        registry: str, tmp_path: Path) -> None:
    """A SIGTERM while ``tracking.command`` runs reaches the command at once; the trigger
    records how it ended, the report is still written, and the run (ended, succeeded)
    exits 143 saying its record, report and decision stand."""
    import signal

    started, finished = tmp_path / "started", tmp_path / "finished"
    db = tmp_path / "s.db"
    proc = _run_drifted_until(registry, tmp_path, f"touch {started}; sleep 60; touch {finished}",
                              started)
    stopped = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert time.monotonic() - stopped < 30 and not finished.exists()
    [(status, code)] = sqlite_rows(db, "SELECT status, command_exit_code FROM retrain_triggers")
    assert status == "command_failed" and code != 0
    [(run_id, run_status)] = sqlite_rows(db, "SELECT run_id, status FROM runs")
    assert run_status == "succeeded"
    assert (tmp_path / "out" / "_reports" / f"{run_id}.html").exists()
    assert "had ended before the stop (its record, report and retraining decision stand)" \
        in err, err


@pytest.mark.slow
def test_a_killed_run_takes_its_retraining_command_with_it_and_records_how_it_ended(
        registry: str, tmp_path: Path) -> None:
    """A SIGKILL of beamscore while ``tracking.command`` runs (nothing can pass that
    signal on): the command's guard sees the launcher gone, stops the command (its
    whole process group) and records the trigger ``command_failed`` with SIGTERM's code;
    the trigger does not stay ``requested`` with nobody running its command."""
    import signal

    from tests.processes import running

    pids, finished = tmp_path / "pids", tmp_path / "finished"
    db = tmp_path / "s.db"
    proc = _run_drifted_until(
        registry, tmp_path,
        f"sleep 60 & echo $$ $! > {pids}.tmp; mv {pids}.tmp {pids}; wait; touch {finished}", pids)
    shell, sleeper = map(int, pids.read_text().split())
    proc.kill()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and sqlite_rows(
            db, "SELECT status FROM retrain_triggers") == [("requested",)]:
        time.sleep(0.1)
    assert sqlite_rows(db, "SELECT status, command_exit_code FROM retrain_triggers") == [
        ("command_failed", -signal.SIGTERM)]
    for pid in (shell, sleeper):  # the shell and the command it started: both ended
        assert not running(pid), pid
    assert not finished.exists()


def _run_drifted_until(registry: str, tmp_path: Path, command: str, marker: Path) -> Any:
    """``beamscore score`` of a drifted day (database ``tmp_path/s.db``) whose retraining
    ``command`` runs, once the command has made ``marker``."""
    root = tmp_path / "landing"
    write_tranche(str(root), "2026-06-01", _corrupted(23, 600), "jsonl")
    proc = _start_tracked(
        ["score", "--from", "2026-06-01", "--to", "2026-06-01", "--input-root", str(root),
         "--registry", registry, "--db", f"sqlite:///{tmp_path / 's.db'}", "--output-dir",
         str(tmp_path / "out"), "--tracking-command", command])
    deadline = time.monotonic() + 120
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists(), proc.communicate()
    return proc


def _start_tracked(argv: list[str]) -> Any:
    import subprocess
    import sys

    from tests.pipelines.helpers import with_model

    return subprocess.Popen([sys.executable, "-m", "pipelines.cli", *with_model(argv)],
                            cwd=Path(__file__).resolve().parents[2], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _stop_once_requested(proc: Any, db: Path) -> None:
    """SIGTERM ``proc`` once a retraining request is recorded and its command (if any)
    has run (a stop while it runs would stop it too); it must stop with 143."""
    import signal

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if sqlite_rows(db, "SELECT count(*) FROM retrain_triggers WHERE status <> "
                               "'requested' OR command = ''")[0][0]:
                break
        except Exception:  # noqa: BLE001 - not created yet
            pass
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err


def test_a_run_in_waves_shares_its_significance_among_them() -> None:
    """Each of k waves tests its tranches as one Holm family at significance / k: the
    run's chance of any false alert stays within significance (Bonferroni over waves)."""
    from pipelines.configuration.config import TrackingConfig
    from pipelines.orchestration.launch import tracking_policy

    assert tracking_policy(TrackingConfig(), waves=4).significance == pytest.approx(
        TrackingConfig().significance / 4)
    assert tracking_policy(TrackingConfig()).significance == TrackingConfig().significance
