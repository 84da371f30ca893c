"""Profiles merge like the union of their batches and survive JSON and pickling."""

from __future__ import annotations

import datetime as dt
import pickle
from decimal import Decimal
from typing import Any

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from tracking.profile import BatchStats, Profile, label_text, label_texts


def _batch(rng: np.random.Generator, n: int) -> BatchStats:
    return BatchStats(predicted=rng.integers(0, 2, n), scores=rng.random(n),
                      lengths=rng.integers(10, 500, n), tokens=rng.integers(1, 80, n),
                      oov=rng.integers(0, 3, n), true=rng.integers(-1, 2, n),
                      importance=rng.random(6), importance_rows=n)


def test_merged_batches_equal_one_profile_of_everything() -> None:
    rng = np.random.default_rng(0)
    batches = [_batch(rng, n) for n in (100, 1, 250, 40)]
    whole = Profile(classes=["x", "y"])
    for b in batches:
        whole.add(b)
    left, right = Profile(classes=["x", "y"]), Profile(classes=["x", "y"])
    for b in batches[:2]:
        left.add(b)
    for b in batches[2:]:
        right.add(b)
    merged = pickle.loads(pickle.dumps(left)).merge(pickle.loads(pickle.dumps(right)))
    assert merged.n == whole.n == 391
    assert (merged.class_counts == whole.class_counts).all()
    assert (merged.confusion == whole.confusion).all()
    assert merged.score.n == whole.score.n and merged.tokens_total == whole.tokens_total
    assert np.allclose(merged.importance_sum, whole.importance_sum)  # type: ignore[arg-type]
    assert merged.importance_rows == 391
    assert np.allclose(merged.importance(), whole.importance_sum / 391)  # type: ignore[operator]
    back = Profile.from_json(whole.to_json(names=list("abcdef")))
    assert back.n == whole.n and back.score.quantiles([0.5]) == whole.score.quantiles([0.5])
    assert [row[1] for row in back.reference["importance_top"]][:1] in (["a"], ["b"], ["c"],
                                                                         ["d"], ["e"], ["f"])


_LABELS = st.one_of(
    st.booleans(), st.integers(-3, 3), st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 1.0, 3.0, 2.5]), st.text(max_size=3), st.none(),
    st.integers(-3, 3).map(np.int64), st.floats(-3, 3).map(np.float32),
    st.lists(st.integers(0, 2), max_size=2), st.dictionaries(st.text(max_size=1), st.booleans(),
                                                             max_size=1),
)


@given(st.lists(_LABELS, max_size=30))
def test_label_texts_equal_label_text_of_each_value(values: list[Any]) -> None:
    """Memoised per distinct value, yet True and 1, 1 and 1.0, np.int64(1) and 1 each
    keep their own text (equal values of different types are different keys)."""
    assert label_texts(values) == [label_text(v) for v in values]
    assert label_texts([True, 1, 1.0, np.int64(1), "1"]) == ["true", "1", "1", "1", "1"]


def test_equal_labels_that_print_apart_keep_their_own_text() -> None:
    """Equal values of one type need not print the same: a Decimal's scale, a tuple
    holding True or 1, the same instant in two zones, a day and a midnight."""
    utc, plus1 = dt.timezone.utc, dt.timezone(dt.timedelta(hours=1))
    values = [Decimal("1.0"), Decimal("1.00"), (1,), (True,), (1.0,),
              dt.datetime(2026, 1, 1, 12, tzinfo=utc), dt.datetime(2026, 1, 1, 13, tzinfo=plus1),
              np.datetime64("2026-01-01"), np.datetime64("2026-01-01T00:00")]
    assert values[0] == values[1] and values[2] == values[3] == values[4]
    assert values[5] == values[6] and values[7] == values[8]
    assert label_texts(values) == [label_text(v) for v in values]
    assert len(set(label_texts(values))) == len(values)
