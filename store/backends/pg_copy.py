"""COPY of beamscore's row tuples into PostgreSQL, in the binary format.

Binary COPY spares the server parsing each value from text: on the ``predictions``
rows, loads take about 15% less time than text COPY of the same rows (``bench/README.md``,
sink). Each column is sent in the binary form of its PostgreSQL type, chosen from its
logical type in ``store.schema``, and the values are the ones the sink builds:

- text: ``str``; float: ``float`` (or ``int``); int: ``int``;
- json: JSON *text* (``str``), sent as the ``jsonb`` it parses to, exactly as text COPY
  would (psycopg's own jsonb dumper would wrap a string in quotes);
- time: ISO-8601 text with a UTC offset (``2026-01-01T00:00:00+00:00``) or an aware
  ``datetime``, sent as ``timestamptz``. A time without an offset is refused, as its
  meaning would depend on the server's time zone.

``register`` installs the two dumpers above on a connection; ``copy_rows`` writes.
The server still checks every value (invalid JSON, a NUL in text, an index row too
large), so a rejected row raises the same SQLSTATE as with text COPY.
"""

from __future__ import annotations

import datetime as dt
import struct
from collections.abc import Sequence
from typing import Any

from psycopg.abc import AdaptContext
from psycopg.adapt import AdaptersMap, Dumper
from psycopg.postgres import types as pg_types
from psycopg.pq import Format

from store.schema import Column

# Logical column type (store.schema) -> the PostgreSQL type COPY sends it as; these are
# the types PostgresDialect creates the columns with.
COPY_TYPES = {"text": "text", "float": "float8", "int": "int8", "time": "timestamptz",
              "json": "jsonb"}
_PG_EPOCH = dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)
_INT8 = struct.Struct("!q").pack
_CACHED_TIMES = 64  # a write's time values are few (the run's scored_at)


class _JsonTextBinary(Dumper):
    """JSON text -> jsonb's binary form (a version byte, then the text)."""

    format = Format.BINARY
    oid = pg_types["jsonb"].oid

    def dump(self, obj: Any) -> bytes:
        if not isinstance(obj, str):
            raise TypeError(f"a json column takes JSON text, not {type(obj).__name__}")
        return b"\x01" + obj.encode()


class _IsoTimeBinary(Dumper):
    """ISO-8601 text with an offset (or an aware datetime) -> timestamptz's binary form
    (microseconds since 2000-01-01 UTC)."""

    format = Format.BINARY
    oid = pg_types["timestamptz"].oid

    def __init__(self, cls: type, context: AdaptContext | None = None):
        super().__init__(cls, context)
        self._cache: dict[str, bytes] = {}

    def dump(self, obj: Any) -> bytes:
        if isinstance(obj, str):
            hit = self._cache.get(obj)
            if hit is not None:
                return hit
            packed = _pack_time(dt.datetime.fromisoformat(obj), obj)
            if len(self._cache) >= _CACHED_TIMES:
                self._cache.clear()
            self._cache[obj] = packed
            return packed
        if isinstance(obj, dt.datetime):
            return _pack_time(obj, obj)
        raise TypeError(f"a time column takes ISO-8601 text, not {type(obj).__name__}")


def _pack_time(value: dt.datetime, given: Any) -> bytes:
    if value.utcoffset() is None:
        raise ValueError(f"the time {given!r} has no UTC offset")
    delta = value - _PG_EPOCH
    return _INT8((delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds)


class _JsonText:
    """Never instantiated: registers ``_JsonTextBinary`` for the jsonb oid only."""


class _IsoTime:
    """Never instantiated: registers ``_IsoTimeBinary`` for the timestamptz oid only."""


def register(adapters: AdaptersMap) -> None:
    """Make a connection's binary COPY send json and time columns as described above
    (call it before opening a cursor: a cursor copies the adapters it starts with).
    Registered for private classes, these dumpers are found by type oid only (as COPY's
    ``set_types`` looks them up): how parameters of other statements are sent is
    unchanged."""
    adapters.register_dumper(_JsonText, _JsonTextBinary)
    adapters.register_dumper(_IsoTime, _IsoTimeBinary)


def copy_rows(cur: Any, table: str, columns: Sequence[Column],
              rows: Sequence[tuple[Any, ...]]) -> None:
    """COPY ``rows`` (tuples in ``columns`` order) into ``table``, binary format."""
    names = ", ".join(c.name for c in columns)
    with cur.copy(f"COPY {table} ({names}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types([COPY_TYPES[c.type] for c in columns])
        for r in rows:
            copy.write_row(r)
