"""The tables beamscore writes, defined once: DDL, row tuples and keys derive from them.

Each ``Table`` names its columns (with a logical type), its primary key and its
indexes. Backends create tables from these definitions, the sink builds row tuples in
``Table.names`` order from named columns, and de-duplication uses ``Table.key``; nothing
addresses a column by position.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

SCHEMA_VERSION = 1

# Logical column types -> SQL per backend.
_SQL_TYPES = {
    "sqlite": {"text": "TEXT", "float": "DOUBLE PRECISION", "int": "BIGINT",
               "time": "TEXT", "json": "TEXT"},
    "postgresql": {"text": "TEXT", "float": "DOUBLE PRECISION", "int": "BIGINT",
                   "time": "TEXT", "json": "TEXT"},
}


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

    def ddl(self, backend: str) -> list[str]:
        """CREATE TABLE (and CREATE INDEX) statements, idempotent."""
        types = _SQL_TYPES[backend]
        cols = [f"{c.name} {types[c.type]}{'' if c.nullable else ' NOT NULL'}"
                for c in self.columns]
        cols.append(f"PRIMARY KEY ({', '.join(self.key)})")
        out = [f"CREATE TABLE IF NOT EXISTS {self.name} ({', '.join(cols)})"]
        for index in self.indexes:
            out.append(f"CREATE INDEX IF NOT EXISTS {self.name}_{'_'.join(index)} "
                       f"ON {self.name} ({', '.join(index)})")
        return out


def keep_last_per_key(table: Table, rows: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """The last row of every key: one statement must not hit the same key twice."""
    idx = table.key_indices
    key = itemgetter(*idx)
    if isinstance(rows, list) and len(set(map(key, rows))) == len(rows):
        return rows  # keys already unique (the common case)
    return list({key(r): r for r in rows}.values())


def _cols(*spec: str | tuple[str, str] | tuple[str, str, bool]) -> tuple[Column, ...]:
    out = []
    for s in spec:
        out.append(Column(s) if isinstance(s, str) else Column(*s))
    return tuple(out)


PREDICTIONS = Table(
    "predictions",
    _cols("doc_id", "tranche", "label", ("score", "float"), ("top_k", "json"),
          "model_name", "model_version", "model_sha256", "run_id", ("scored_at", "time"),
          "source_file", ("metadata", "json", True)),
    key=("doc_id", "model_name", "model_version"),
)
DEAD_LETTERS = Table(
    "dead_letters",
    _cols("run_id", "tranche", "source_file", ("position", "int"), "stage", "reason",
          "payload"),
    key=("run_id", "source_file", "position", "stage"),
)
RUNS = Table(
    "runs",
    _cols("run_id", ("started_at", "time"), ("finished_at", "time", True), "status",
          ("config", "json"), "model", ("counts", "json", True)),
    key=("run_id",),
)
TRANCHES = Table(
    "tranches",
    _cols("tranche", "model_name", "model_version", "fingerprint", ("files", "json"),
          "run_id", "status", ("counts", "json", True), ("lease_until", "float", True),
          ("started_at", "time"), ("finished_at", "time", True)),
    key=("tranche", "model_name", "model_version"),
)
TABLES = (PREDICTIONS, DEAD_LETTERS, RUNS, TRANCHES)
