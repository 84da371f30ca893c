"""Calling a model: failure isolation by bisection, the top-k columns, and warming a
process for the predictions of the workers it forks."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.linear_model import LogisticRegression

from models.predict import predict_with_isolation, top_k_columns
from tests.engine.helpers import in_fresh_python


class PoisonModel:
    """sklearn-style classifier: deterministic per-row probabilities, and a
    ``predict_proba`` that raises for the whole call if any text contains POISON."""

    classes_ = np.array(["neg", "neutral", "pos"])

    def __init__(self) -> None:
        self.calls = 0

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        self.calls += 1
        texts = list(texts)
        if any("POISON" in t for t in texts):
            raise ValueError("poisoned input")
        raw = np.array([[len(t) % 3 + 1, t.count("a") + 1, len(t.split()) + 1] for t in texts],
                       dtype=np.float64).reshape(len(texts), 3)
        return raw / raw.sum(axis=1, keepdims=True)


class NaNModel(PoisonModel):
    """Returns a NaN row (instead of raising) for texts containing NAN."""

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        out = super().predict_proba([t.replace("NAN", "") for t in texts])
        out[[("NAN" in t) for t in texts]] = np.nan
        return out


def _texts(n: int, poisoned: set[int], marker: str = "POISON") -> list[str]:
    words = ["alpha", "banana", "cab", "a b c", "data", "aaa aa"]
    return [(f"{marker} " if i in poisoned else "") + f"{words[i % 6]} {i} " + "a" * (i % 4)
            for i in range(n)]


@pytest.mark.parametrize("poisoned", [set(), {0}, {36}, {0, 5, 6, 36}, {3, 17, 18, 19, 20}])
def test_only_poisoned_rows_fail_and_others_match_clean_scoring(poisoned: set[int]) -> None:
    model = PoisonModel()
    texts = _texts(37, poisoned)
    probs, errors = predict_with_isolation(model, texts)
    assert set(errors) == poisoned
    assert all("poisoned input" in e and "ValueError" in e for e in errors.values())
    clean = [i for i in range(len(texts)) if i not in poisoned]
    expected = PoisonModel().predict_proba([texts[i] for i in clean])
    np.testing.assert_allclose(probs[clean], expected)
    assert np.isnan(probs[sorted(poisoned)]).all()
    if not poisoned:
        assert model.calls == 1, "a clean batch is one predict_proba call"


def test_every_row_poisoned_gives_an_error_per_row() -> None:
    texts = _texts(8, set(range(8)))
    probs, errors = predict_with_isolation(PoisonModel(), texts)
    assert sorted(errors) == list(range(8))
    assert np.isnan(probs).all()


def test_non_finite_probabilities_are_errors_for_those_rows_only() -> None:
    texts = _texts(10, {2, 7}, marker="NAN")
    probs, errors = predict_with_isolation(NaNModel(), texts)
    assert set(errors) == {2, 7}
    assert all("non-finite" in e for e in errors.values())
    ok = [i for i in range(10) if i not in (2, 7)]
    assert np.isfinite(probs[ok]).all()


class DyingModel(PoisonModel):
    """Its process dies (as if killed) on texts containing DIE: the first ``times`` calls
    that see one, counted in ``marker`` (the calls run in forked children)."""

    def __init__(self, marker: str, times: int):
        super().__init__()
        self.marker, self.times = marker, times

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        import os

        if any("DIE" in t for t in texts):
            with open(self.marker, "a+") as f:
                f.seek(0)
                died = len(f.read())
                if died < self.times:
                    f.write("x")
                    f.flush()
                    os._exit(9)
        return super().predict_proba([t.replace("DIE", "") for t in texts])


def test_a_child_that_dies_once_is_tried_again_and_one_that_always_dies_is_isolated(
        tmp_path: Any) -> None:
    from models.budget import TimeLimit

    texts = ["good a", "DIE once", "good b"]
    probs, errors = predict_with_isolation(DyingModel(str(tmp_path / "once"), 1), texts,
                                           TimeLimit(5.0))
    assert errors == {} and np.isfinite(probs).all()
    probs, errors = predict_with_isolation(DyingModel(str(tmp_path / "always"), 10**6), texts,
                                           TimeLimit(5.0))
    assert list(errors) == [1] and "died (exit status 9)" in errors[1]
    assert np.isfinite(probs[[0, 2]]).all()


class ExitingModel(PoisonModel):
    """Calls ``sys.exit`` on a text containing EXIT (third-party code may)."""

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        if any("EXIT" in t for t in texts):
            raise SystemExit(3)
        return super().predict_proba(texts)


def test_a_record_whose_model_call_exits_is_isolated_without_a_time_limit() -> None:
    texts = _texts(12, {4}, marker="EXIT")
    probs, errors = predict_with_isolation(ExitingModel(), texts)
    assert errors == {4: "SystemExit: 3"}
    assert np.isfinite(np.delete(probs, 4, axis=0)).all()


class NotADistributionModel(PoisonModel):
    """Scores that are not probabilities on texts containing NEG (a negative one) and
    BIG (a row summing to 3)."""

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        out = super().predict_proba(texts)
        out[[("NEG" in t) for t in texts]] = [0.75, 0.75, -0.5]
        out[[("BIG" in t) for t in texts]] = [1.0, 1.0, 1.0]
        return out.astype(np.float32)  # float32 rounding stays within the tolerance


def test_probabilities_that_are_not_a_distribution_are_errors_for_those_rows() -> None:
    texts = _texts(10, set())
    texts[2], texts[7] = "NEG " + texts[2], "BIG " + texts[7]
    model = NotADistributionModel()
    probs, errors = predict_with_isolation(model, texts)
    assert sorted(errors) == [2, 7] and model.calls == 1  # marked, not bisected
    assert "not a distribution: [0.75, 0.75, -0.5]" in errors[2]
    assert "not a distribution: [1.0, 1.0, 1.0]" in errors[7]


def test_empty_input() -> None:
    probs, errors = predict_with_isolation(PoisonModel(), [])
    assert probs.shape == (0, 3) and errors == {}


def test_top_k_orders_by_descending_probability_ties_in_class_order() -> None:
    probs = np.array([[0.1, 0.7, 0.2], [0.4, 0.4, 0.2], [0.05, 0.15, 0.8]])
    labels, scores, top_k = top_k_columns(probs, ["a", "b", "c"], 2)
    assert labels == ["b", "a", "c"]
    np.testing.assert_allclose(scores, [0.7, 0.4, 0.8])
    assert [json.loads(t) for t in top_k] == [
        [["b", 0.7], ["c", 0.2]], [["a", 0.4], ["b", 0.4]], [["c", 0.8], ["b", 0.15]]]


def test_top_k_larger_than_number_of_classes_lists_every_class() -> None:
    probs = np.array([[0.2, 0.5, 0.3]])
    labels, scores, top_k = top_k_columns(probs, np.array([1, 2, 3]), 10)
    assert labels == ["2"]
    assert json.loads(top_k[0]) == [["2", 0.5], ["3", 0.3], ["1", 0.2]]



@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 40), n_classes=st.integers(1, 7), k=st.integers(1, 9),
       seed=st.integers(0, 2**32 - 1), ties=st.booleans(),
       names=st.lists(st.text(min_size=1, max_size=4), min_size=7, max_size=7, unique=True))
def test_top_k_json_is_json_dumps_of_each_row(n: int, n_classes: int, k: int, seed: int,
                                              ties: bool, names: list[str]) -> None:
    """Against ``json.dumps`` row by row: labels of any text (quotes, backslashes,
    non-ASCII), scores rounded to 6 decimals (tiny ones in exponent form), ties kept
    in class order, k above the number of classes."""
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(n_classes), size=n)
    if ties:
        probs = np.round(probs, 1)
    probs[:, 0] *= rng.choice([1.0, 1e-7], size=n)
    classes = names[:n_classes]
    labels, scores, top_k = top_k_columns(probs, classes, k)
    expected = []
    for row in probs:
        order = sorted(range(n_classes), key=lambda j: (-row[j], j))[:k]
        expected.append(json.dumps([[classes[j], float(np.round(row[j], 6))] for j in order],
                                   ensure_ascii=False))
    assert top_k == expected
    assert labels == [classes[int(np.argmax(row))] for row in probs]
    assert scores.tolist() == [float(row.max()) for row in probs]


# Loads a fitted model (loading runs no input check), optionally warms, then counts the
# scans of installed distributions' entry points during its first prediction.
_FIRST_PREDICTION = """
import importlib.metadata, json, os
import joblib, numpy as np
from models.predict import warm_input_validation
model = joblib.load(MODEL_PATH)
threads = len(os.listdir("/proc/self/task"))  # the process's threads, native ones too
if WARM:
    warm_input_validation()
new_threads = len(os.listdir("/proc/self/task")) - threads
scans = []
real = importlib.metadata.entry_points
importlib.metadata.entry_points = lambda *a, **k: scans.append(1) or real(*a, **k)
model.predict_proba(np.array([[0.5]]))
print(json.dumps({"scans": len(scans), "new_threads": new_threads}))
"""


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads in /proc")
@pytest.mark.parametrize("warm", [True, False])
def test_a_warmed_process_predicts_without_searching_installed_packages(
        tmp_path: Path, warm: bool) -> None:
    """What scikit-learn's first input check does once per process (narwhals' search of
    the installed distributions' entry points), a warmed process (the fork server's
    zygote) has done for every worker it forks; warming starts no thread."""
    path = tmp_path / "model.joblib"
    joblib.dump(LogisticRegression().fit(np.array([[0.0], [1.0]]), [0, 1]), path)
    found = in_fresh_python(f"MODEL_PATH, WARM = {str(path)!r}, {warm!r}\n"
                            + _FIRST_PREDICTION)
    assert found["new_threads"] == 0
    assert (found["scans"] == 0) if warm else (found["scans"] > 0)


class LoggedPoisonModel(PoisonModel):
    """A PoisonModel that appends the texts of each call to ``log`` (the calls run in
    forked children, so the log is a file)."""

    def __init__(self, log: str):
        super().__init__()
        self.log = log

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        with open(self.log, "a") as f:
            f.write(f"{len(list(texts))}\n")
        return super().predict_proba(texts)


def test_once_the_batch_budget_is_spent_no_call_starts_and_only_failed_parts_are_left(
        tmp_path: Path) -> None:
    """A patched clock moves 1 s at each call: 8 records at 0.125 s each are a 1 s limit,
    a 4 s budget, so three calls start: the batch (fails: record 0 raises), its halves
    (the second scored); the first half, failed as a whole, is left to the budget."""
    from models.budget import ModelCalls, TimeLimit

    ticks = iter(range(100))
    calls = ModelCalls(TimeLimit(per_record=0.125, minimum=0.1), 8, clock=lambda: next(ticks))
    log = tmp_path / "calls"
    texts = _texts(8, {0})
    probs, errors = predict_with_isolation(LoggedPoisonModel(str(log)), texts, calls)
    assert log.read_text().split() == ["8", "4", "4"]
    assert sorted(errors) == [0, 1, 2, 3]
    assert all(e == ("timeout: the batch's time budget (4 s, 4 times its limit of 1 s) was "
                     "spent before this record could be scored") for e in errors.values())
    np.testing.assert_allclose(probs[4:], PoisonModel().predict_proba(texts[4:]))


def test_a_call_the_budget_cuts_short_is_spent_not_a_timeout_of_its_records() -> None:
    """What is left of the budget (0.5 s of a patched clock) bounds a call whose own
    limit is 1 s: it is killed then, and reported as the budget's."""
    from models.budget import SPENT, ModelCalls, TimeLimit

    clock = iter([0.0, 3.5])
    calls = ModelCalls(TimeLimit(per_record=1.0), 1, clock=lambda: next(clock))
    started = time.monotonic()
    outcome = calls.run(lambda: time.sleep(3600), 1)
    assert outcome.status == SPENT and "time budget (4 s" in outcome.message
    assert 0.4 < time.monotonic() - started < 3
