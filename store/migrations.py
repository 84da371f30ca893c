"""Schema versions and how they are applied, by ``Database.init_schema``, and the check
that the tables found are the ones beamscore writes (``table_problems``).

``schema_version`` holds every version applied. A new database gets the current schema
at once; an older one runs each migration after its version in order, in the same
transaction (PostgreSQL under an advisory lock, SQLite under ``BEGIN IMMEDIATE``), so
several workers starting together migrate it once, and existing rows are kept. Each
backend's dialect writes the statements of each version (``Dialect.migration``).

Version 4: the lease's fencing token ``fence`` on tranches (see ``store.ledger``;
rows of earlier versions have none, which no run holds).

Version 3: the tracking tables ``monitoring`` and ``retrain_triggers`` (created by the
closing ``CREATE ... IF NOT EXISTS``; nothing else changes).

Version 2: predictions keyed by (tranche, doc_id, model_name, model_version) with the
record's ``position`` (rows from version 1 get position 0); ``host`` and ``pid`` on
runs and tranches; indexes on run_id and tranche; in PostgreSQL, ``timestamptz``
times and ``jsonb`` documents.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from store.backends.dialect import Dialect
from store.schema import DEAD_LETTERS, PREDICTIONS, RUNS, SCHEMA_VERSION, TABLES, TRANCHES

Execute = Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]


def migrate(execute: Execute, dialect: Dialect) -> None:
    """Bring the database to ``SCHEMA_VERSION``; call inside the backend's migration
    lock (``execute`` runs one statement there)."""
    execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)", ())
    current = execute("SELECT max(version) FROM schema_version", ())[0][0]
    if current is None:
        _create_tables(execute, dialect)
        current = SCHEMA_VERSION
        _record(execute, dialect, current)
    for version in range(current + 1, SCHEMA_VERSION + 1):
        for sql in dialect.migration(version):
            execute(sql, ())
        _record(execute, dialect, version)
    _create_tables(execute, dialect)  # tables a later version added


def not_tables(execute: Execute, dialect: Dialect) -> list[str]:
    """The names of beamscore's tables that stand for something else where beamscore
    looks for them (a view or a sequence of that name first on PostgreSQL's search path,
    a view in SQLite): creating or writing the table would fail on it."""
    found = []
    for table in TABLES:
        for (kind,) in execute(dialect.relation_kind(), [table.name]):
            if not str(kind).startswith("table"):
                found.append(f"{table.name} is a {kind}, not a table")
    return found


def table_problems(execute: Execute, dialect: Dialect) -> list[str]:
    """What makes the database's tables other than the ones beamscore writes (made by
    hand or altered, which ``CREATE TABLE IF NOT EXISTS`` leaves as they are): a column
    missing, one of a type that would store beamscore's values otherwise
    (``Dialect.accepts``: a binary COPY read by another type, an id stored as a number),
    and a column beamscore does not write that must be given a value (NOT NULL without a
    default: every row would be refused)."""
    problems = []
    for table in TABLES:
        found = {str(name): (str(kind).lower(), bool(required)) for name, kind, required in
                 execute(dialect.columns(), [table.name])}
        for column in table.columns:
            if column.name not in found:
                problems.append(f"{table.name}.{column.name} is missing")
            elif not dialect.accepts(column.type, found[column.name][0]):
                problems.append(f"{table.name}.{column.name} is {found[column.name][0]}, "
                                f"beamscore writes {dialect.types[column.type].lower()}")
        problems += [f"{table.name}.{name} is NOT NULL without a default, and beamscore does "
                     "not write it" for name, (_, required) in found.items()
                     if required and name not in table.names]
    return problems


def _create_tables(execute: Execute, dialect: Dialect) -> None:
    for table in TABLES:
        for ddl in dialect.ddl(table):
            execute(ddl, ())


def _record(execute: Execute, dialect: Dialect, version: int) -> None:
    execute(f"INSERT INTO schema_version VALUES ({dialect.placeholder})", [version])


def lease_holders_and_indexes(dialect: Dialect) -> list[str]:
    """What version 2 adds in every backend: the lease holder's host and pid on runs and
    tranches, and the indexes of predictions and dead letters."""
    added = [f"ALTER TABLE {table.name} ADD COLUMN {dialect.column_sql(table.column(c))}"
             for table in (RUNS, TRANCHES) for c in ("host", "pid")]
    return added + [ddl for table in (PREDICTIONS, DEAD_LETTERS)
                    for ddl in dialect.index_ddl(table)]


def fencing_tokens(dialect: Dialect) -> list[str]:
    """What version 4 adds in every backend: the lease's fencing token on tranches."""
    fence = dialect.column_sql(TRANCHES.column("fence"))
    return [f"ALTER TABLE {TRANCHES.name} ADD COLUMN {fence}"]


def tables_only() -> list[str]:
    """A version that only adds tables (created at the end of ``migrate``)."""
    return []
