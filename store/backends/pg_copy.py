"""COPY of beamscore's row tuples into PostgreSQL, in the binary format.

Binary COPY spares the server parsing each value from text: one raw COPY of 1,000,000
``predictions`` rows loads 9-19% faster than in the text format, and the sink's writers
write 10-18% more rows per second (``bench/README.md``, sink). Each column is sent in
the binary form of the PostgreSQL type the dialect declares for its logical type
(``PostgresDialect.types``, passed in), and takes the values the sink builds:

- text: ``str``; float: ``float`` or ``int``; int: ``int`` (a ``bool`` in a float or int
  column is stored as 1 or 0);
- json: JSON *text* (``str``), sent as the ``jsonb`` it parses to, exactly as text COPY
  would (psycopg's own jsonb dumper would store a string as a JSON string);
- time: ISO-8601 text with a UTC offset (``2026-01-01T00:00:00+00:00``) or an aware
  ``datetime``, sent as ``timestamptz``; a time without an offset is refused, as its
  meaning would depend on the server's time zone (digits of a second beyond the sixth
  are cut, where the server would round).

A value of another type, or one its column cannot hold, is refused as
``psycopg.DataError`` naming the column (a permanent error: the sink isolates the row
and dead-letters it), and the COPY is cancelled, leaving the connection usable. The
server checks the rest (invalid JSON, a NUL in text, an index row too large) with its
own SQLSTATEs.

``register`` installs the two dumpers above on a connection; ``copy_rows`` writes.
"""

from __future__ import annotations

import datetime as dt
import struct
from collections.abc import Mapping, Sequence
from typing import Any

import psycopg
from psycopg.abc import AdaptContext
from psycopg.adapt import AdaptersMap, Dumper, PyFormat, Transformer
from psycopg.postgres import types as pg_types
from psycopg.pq import Format

from store.schema import Column

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


def register(adapters: AdaptersMap) -> None:
    """Make a connection's binary COPY send json and time columns as described above
    (call it before opening a cursor: a cursor copies the adapters it starts with).
    The dumpers are registered for lookups by type oid only, as COPY's ``set_types``
    makes: parameters of statements, looked up by their Python type, are sent as
    before; binary values of jsonb and timestamptz looked up by oid (COPY, arrays,
    ranges of them) now take text as described above."""
    adapters.register_dumper(None, _JsonTextBinary)
    adapters.register_dumper(None, _IsoTimeBinary)


def copy_rows(cur: Any, table: str, columns: Sequence[Column],
              rows: Sequence[tuple[Any, ...]], sql_types: Mapping[str, str]) -> None:
    """COPY ``rows`` (tuples in ``columns`` order) into ``table``, binary format;
    ``sql_types`` maps each logical column type to the SQL type of its columns."""
    names = ", ".join(c.name for c in columns)
    oids = [pg_types[sql_types[c.type].lower()].oid for c in columns]
    row: tuple[Any, ...] = ()
    try:
        with cur.copy(f"COPY {table} ({names}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(oids)
            for row in rows:
                copy.write_row(row)
    except (TypeError, ValueError, OverflowError) as exc:  # UnicodeError is a ValueError
        raise psycopg.DataError(f"{table}: {_refused(cur, columns, oids, row, exc)}") from exc


def _refused(cur: Any, columns: Sequence[Column], oids: Sequence[int],
             row: tuple[Any, ...], exc: Exception) -> str:
    """Which column's value COPY could not send: each value of the row is dumped alone
    as its column's type until one fails (only on this error path)."""
    for c, oid, value in zip(columns, oids, row):
        tx = Transformer.from_context(cur)
        tx.set_dumper_types([oid], Format.BINARY)
        try:
            tx.dump_sequence([value], [PyFormat.BINARY])
        except (TypeError, ValueError, OverflowError) as one:
            return f"column {c.name} ({c.type}) cannot take {value!r:.80}: {one}"
    return f"a value COPY cannot send: {exc}"
