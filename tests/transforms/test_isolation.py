"""The isolation rule at read (``impassable``) and dead letters that can always be stored:
a record holding a string that is not valid Unicode is dead-lettered alone, and no
dead letter, whatever it was made of, holds such a string."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from landing.reading import encodes, safe_text
from transforms.records import dead_letter, impassable, unicode_flaw

# Text that may hold lone surrogates (category Cs) beside anything else.
_ANY_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=12)
_VALUE = st.recursive(
    st.none() | st.integers() | st.floats(allow_nan=False) | _ANY_TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_ANY_TEXT, inner, max_size=3),
    max_leaves=8)
_RECORD = st.dictionaries(_ANY_TEXT, _VALUE, max_size=5)


def _storable(value: Any) -> bool:
    """The reference: whether the value can be written as UTF-8 JSON."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@given(st.lists(_RECORD, max_size=12))
@settings(max_examples=300, deadline=None)
def test_exactly_the_records_that_cannot_be_written_as_utf8_are_isolated(
        records: list[dict[str, Any]]) -> None:
    found = impassable(records)
    assert set(found) == {i for i, r in enumerate(records) if not _storable(r)}
    assert all(encodes(reason) for reason in found.values())


@pytest.mark.parametrize("record, reason", [
    ({"id": "a", "text": "fine", "note": "\ud800"}, "field 'note' is not valid Unicode"),
    ({"id": "s\udc80", "text": "fine"}, "field 'id' is not valid Unicode"),
    ({"id": "a", "text": "t", "lab\udce9l": "x"}, "field name 'lab\\xe9l' is not valid"),
    ({"id": "a", "text": "t", "tags": ["ok", "bad \udfff"]},
     "field 'tags[1]' is not valid Unicode"),
    ({"id": "a", "text": "t", "meta": {"who": {"name": "\ud83d"}}},
     "field 'meta.who.name' is not valid Unicode"),
])
def test_the_reason_names_the_field(record: dict[str, Any], reason: str) -> None:
    good = {"id": "b", "text": "an emoji \U0001f600 and caf\u00e9", "n": 1, "x": None}
    found = impassable([good, record, good])
    assert list(found) == [1] and found[1].startswith(reason), found


def test_flat_valid_records_pass_unchecked_beyond_one_pass() -> None:
    records = [{"id": f"d{i}", "text": "café ü 漢字 \U0001f600", "n": i} for i in range(100)]
    assert impassable(records) == {}
    assert unicode_flaw(records) == ""


@given(st.binary(max_size=40))
def test_undecodable_bytes_are_shown_as_python_escapes_them(data: bytes) -> None:
    """Against Python's own ``backslashreplace``: a name read with ``surrogateescape``
    (as the OS gives file names) is shown with each undecodable byte as ``\\xNN``."""
    assert safe_text(data.decode("utf-8", "surrogateescape")) == \
        data.decode("utf-8", "backslashreplace")


@given(_ANY_TEXT)
def test_safe_text_always_encodes_and_leaves_valid_text_alone(text: str) -> None:
    shown = safe_text(text)
    assert encodes(shown)
    assert (shown == text) == encodes(text)


@given(source=_ANY_TEXT, reason=_ANY_TEXT, payload=_VALUE)
@settings(max_examples=200, deadline=None)
def test_every_dead_letter_can_be_stored_as_utf8(source: str, reason: str, payload: Any
                                                 ) -> None:
    dl = dead_letter(tranche="2026-01-01", source_file=source, position=1, stage="read",
                     reason=reason, payload=payload, payload_limit=50)
    assert _storable(dl)
    assert (dl["source_file"] == source) == encodes(source)
