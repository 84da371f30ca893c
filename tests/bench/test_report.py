"""The bench's ratios: of median wall times, and round by round (``paired_ratios``); the
contenders' order, reversed every other round (``round_order``)."""

from __future__ import annotations

import sys
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))  # its own imports

from contenders import Result  # noqa: E402
from report import assess, paired_ratios  # noqa: E402
from run_bench import round_order  # noqa: E402

WALLS = st.lists(st.floats(1.0, 100.0), min_size=1, max_size=7)


def _result(name: str, walls: list[float], rcs: list[int] | None = None) -> Result:
    r = Result(name, name, name, walls=list(walls), rcs=rcs or [0] * len(walls))
    r.scored = 1000
    return r


@given(WALLS, st.floats(0.25, 4.0))
def test_a_contender_k_times_slower_in_every_round_is_k_in_every_round(
        walls: list[float], k: float) -> None:
    """However the host's speed drifts from round to round, a contender that takes k
    times c's time in each round gives c/it = k in each."""
    results = {"c": _result("c", walls), "c8": _result("c8", [w * k for w in walls])}
    paired = paired_ratios(results)["c/c8"]
    assert len(paired) == len(walls)
    assert all(abs(r - k) <= 1e-9 * k for r in paired)
    assert assess(results, {}).paired == {"c/c8": paired}


def test_rounds_either_side_failed_are_left_out() -> None:
    results = {"c": _result("c", [10.0, 20.0, 30.0], [0, 1, 0]),
               "a": _result("a", [20.0, 40.0, 90.0], [0, 0, 0]),
               "d": _result("d", [15.0, 25.0, 35.0], [1, 1, 1])}
    assert paired_ratios(results) == {"c/a": [2.0, 3.0]}
    assert paired_ratios({"a": results["a"]}) == {}


@given(st.lists(st.sampled_from(["a", "b", "b2", "c0", "c", "d", "c1", "c8", "ct"]),
                min_size=1, max_size=9, unique=True), st.integers(1, 4))
def test_over_an_even_number_of_rounds_each_contender_precedes_each_other_as_often(
        names: list[str], pairs_of_rounds: int) -> None:
    rounds = [round_order(names, rnd) for rnd in range(2 * pairs_of_rounds)]
    assert all(sorted(r) == sorted(names) for r in rounds)  # every contender once a round
    assert rounds[0] == names
    for x in names:
        for y in names:
            if x != y:
                before = sum(r.index(x) < r.index(y) for r in rounds)
                assert before == len(rounds) / 2
