"""The tables beamscore writes, defined once: DDL, row tuples and keys derive from them.

Each ``Table`` names its columns (with a logical type: text, float, int, time, json),
its primary key and its indexes. Each backend's dialect (``store.backends``) writes
the SQL of these definitions, the sink builds row tuples in ``Table.names`` order from
named columns, and de-duplication uses ``Table.key``; nothing addresses a column by
position.

Which row of a key wins: for a table with ``prefer`` columns (``predictions``), a row
written by another run replaces the stored one (a rerun), and of two rows of the same
run the one with the smaller ``prefer`` values stays (the first occurrence of an id in
a tranche, in file order, then position), whatever order they are written in. For
the other tables the last row written wins. The backends' upserts say the same in SQL.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

SCHEMA_VERSION = 4


@dataclass(frozen=True)
class Column:
    name: str
    type: str = "text"  # text | float | int | time | json
    nullable: bool = False


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    indexes: tuple[tuple[str, ...], ...] = ()
    server_indexes: tuple[tuple[str, ...], ...] = ()  # a database server's, not SQLite's
    prefer: tuple[str, ...] = ()  # within one run, the row with the smallest values wins

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def key_indices(self) -> tuple[int, ...]:
        return tuple(self.names.index(k) for k in self.key)

    def rows(self, columns: Mapping[str, Sequence[Any]]) -> list[tuple[Any, ...]]:
        """Row tuples in column order from a mapping of column name -> values."""
        return list(zip(*(columns[n] for n in self.names)))

    def row(self, values: Mapping[str, Any]) -> tuple[Any, ...]:
        return tuple(values[n] for n in self.names)

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)


def one_row_per_key(table: Table, rows: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """One row of every key, the one the database would keep (see the module
    docstring): one statement must not hit the same key twice."""
    key = itemgetter(*table.key_indices)
    if isinstance(rows, list) and any(len(set(map(itemgetter(i), rows))) == len(rows)
                                      for i in table.key_indices):
        return rows  # one key column alone is unique, so the keys are (the common case)
    if not table.prefer:
        return list({key(r): r for r in rows}.values())
    order = itemgetter(*(table.names.index(c) for c in table.prefer))
    best: dict[Any, tuple[Any, ...]] = {}
    for r in rows:
        k = key(r)
        if k not in best or order(r) < order(best[k]):
            best[k] = r
    return list(best.values())


def _cols(*spec: str | tuple[str, str] | tuple[str, str, bool]) -> tuple[Column, ...]:
    out = []
    for s in spec:
        out.append(Column(s) if isinstance(s, str) else Column(*s))
    return tuple(out)


PREDICTIONS = Table(
    "predictions",
    _cols("doc_id", "tranche", "label", ("score", "float"), ("top_k", "json"),
          "model_name", "model_version", "model_sha256", "run_id", ("scored_at", "time"),
          "source_file", ("position", "int"), ("metadata", "json", True)),
    # The key leads with tranche, so it serves lookups by tranche (and by tranche and
    # run, the summary's count); PostgreSQL also indexes run_id. SQLite, the embedded
    # database, does without: that index would cost a third of its insert time.
    key=("tranche", "doc_id", "model_name", "model_version"),
    server_indexes=(("run_id",),),
    prefer=("source_file", "position"),
)
DEAD_LETTERS = Table(
    "dead_letters",
    _cols("run_id", "tranche", "source_file", ("position", "int"), "stage", "reason",
          "payload"),
    key=("run_id", "source_file", "position", "stage"),  # also serves lookups by run_id
    indexes=(("tranche",),),
)
RUNS = Table(
    "runs",
    _cols("run_id", ("started_at", "time"), ("finished_at", "time", True), "status",
          ("config", "json"), "model", ("counts", "json", True), ("host", "text", True),
          ("pid", "int", True)),
    key=("run_id",),
)
TRANCHES = Table(
    "tranches",
    _cols("tranche", "model_name", "model_version", "fingerprint", ("files", "json"),
          "run_id", "status", ("counts", "json", True), ("lease_until", "float", True),
          ("started_at", "time"), ("finished_at", "time", True), ("host", "text", True),
          ("pid", "int", True), ("fence", "int", True)),
    key=("tranche", "model_name", "model_version"),
)
MONITORING = Table(
    "monitoring",
    _cols("run_id", "tranche", "model_name", "model_version", "metric", "slice",
          ("value", "float", True), ("n", "int"), ("ci_low", "float", True),
          ("ci_high", "float", True), ("threshold", "float", True), "status"),
    key=("run_id", "tranche", "metric", "slice"),
    indexes=(("model_name", "model_version", "metric"),),
)
RETRAIN_TRIGGERS = Table(
    "retrain_triggers",
    _cols("trigger_id", ("created_at", "time"), "model_name", "model_version",
          ("reasons", "json"), ("run_ids", "json"), "status", "command",
          ("command_exit_code", "int", True)),
    key=("trigger_id",),
    indexes=(("model_name", "model_version"),),
)
TABLES = (PREDICTIONS, DEAD_LETTERS, RUNS, TRANCHES, MONITORING, RETRAIN_TRIGGERS)
