"""Property-based tests of validation (hypothesis): any values, one reason per row, and
a row is valid exactly when its id and text are usable strings."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from tests.transforms.conftest import build_batch
from transforms.validate import validation_reasons

VALUES = st.one_of(st.none(), st.text(max_size=20), st.integers(), st.floats(),
                   st.booleans(), st.lists(st.integers(), max_size=2),
                   st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
MAX = 15


@given(st.lists(st.fixed_dictionaries({"id": VALUES, "text": VALUES}), max_size=20))
def test_every_row_gets_one_reason_and_valid_rows_are_usable(rows: list[dict[str, Any]]
                                                             ) -> None:
    reasons = list(validation_reasons(build_batch(rows).frame, MAX))
    assert len(reasons) == len(rows)
    for row, reason in zip(rows, reasons):
        usable = (isinstance(row["id"], str) and row["id"].strip() != "" and "\x00" not in row["id"]
                  and isinstance(row["text"], str) and row["text"].strip() != ""
                  and len(row["text"]) <= MAX)
        assert (reason == "") == usable, (row, reason)
