"""A database's SQL dialect: the text of the statements beamscore's tables need.

A ``Dialect`` turns the table definitions of ``store.schema`` into SQL for one
database: column types, ``CREATE TABLE`` and ``CREATE INDEX``, the upsert that keeps the
row ``store.schema`` says, a plain ``UPDATE`` and the statements of each schema
migration. It holds no connection, so its output can be checked on its own. Each
backend module defines its dialect; the base class holds the SQL all of them share.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from store.schema import Column, Table


class Dialect:
    """SQL text for one database. Subclasses set ``name``, ``placeholder`` and
    ``types`` and implement ``upsert`` and ``migration``."""

    name = ""
    placeholder = "?"
    types: Mapping[str, str] = {}  # logical column type -> SQL type

    def columns(self) -> str:
        """A query of an existing table's columns: (name, type, whether a row must give
        it a value: NOT NULL without a default), none if there is no such table
        (parameter: the table's name)."""
        raise NotImplementedError

    def relation_kind(self) -> str:
        """A query of what a name beamscore gives a table stands for where it looks for
        that table: one row (a kind in words: "table", "view", ...) or none (parameter:
        the table's name)."""
        raise NotImplementedError

    def accepts(self, column_type: str, found: str) -> bool:
        """Whether a column of type ``found`` (as ``columns`` reads it, lower case)
        stores the values of beamscore's logical ``column_type`` as its own type would."""
        raise NotImplementedError

    def column_sql(self, column: Column) -> str:
        return (f"{column.name} {self.types[column.type]}"
                f"{'' if column.nullable else ' NOT NULL'}")

    def indexes(self, table: Table) -> tuple[tuple[str, ...], ...]:
        """The indexes this database keeps on ``table`` besides its primary key."""
        return table.indexes

    def ddl(self, table: Table, name: str | None = None) -> list[str]:
        """CREATE TABLE and CREATE INDEX statements, idempotent (``name``: another table
        of the same shape, for migrations)."""
        cols = [self.column_sql(c) for c in table.columns]
        cols.append(f"PRIMARY KEY ({', '.join(table.key)})")
        return [f"CREATE TABLE IF NOT EXISTS {name or table.name} ({', '.join(cols)})",
                *self.index_ddl(table)]

    def index_ddl(self, table: Table) -> list[str]:
        return [f"CREATE INDEX IF NOT EXISTS {table.name}_{'_'.join(index)} "
                f"ON {table.name} ({', '.join(index)})" for index in self.indexes(table)]

    def values(self, count: int) -> str:
        return f"VALUES ({', '.join([self.placeholder] * count)})"

    def update(self, table: Table, columns: Sequence[str], where: Sequence[str]) -> str:
        """``UPDATE`` of ``columns`` in the rows whose ``where`` columns equal the
        parameters (the new values first, then the ``where`` values)."""
        p = self.placeholder
        return (f"UPDATE {table.name} SET {', '.join(f'{c} = {p}' for c in columns)} "
                f"WHERE {' AND '.join(f'{c} = {p}' for c in where)}")

    def upsert(self, table: Table, columns: Sequence[str] | None = None, *,
               source: str = "", only_if: str = "") -> str:
        """Insert rows of ``columns`` (default: all, in ``table.names`` order) or update
        the stored row of their key, keeping the row ``store.schema`` says wins.
        ``source`` is a SELECT to insert from, else one row of placeholders.
        ``only_if`` is a condition on the stored row (its columns named
        ``<table>.<column>``): where it does not hold, the stored row stays. Parameters:
        the row's values, then those of ``only_if``."""
        raise NotImplementedError

    row_lock = ""  # what makes a SELECT lock the rows it reads until the transaction ends

    def fence_check(self) -> str:
        """A row when the run holds the tranche's lease with the token (parameters:
        tranche, model name, model version, run id, token)."""
        p = self.placeholder
        return (f"SELECT tranche FROM tranches WHERE tranche = {p} AND model_name = {p} "
                f"AND model_version = {p} AND run_id = {p} AND fence = {p} "
                f"AND status = 'running'{self.row_lock}")

    def migration(self, version: int) -> list[str]:
        """The statements that bring a database of ``version - 1`` to ``version``
        (see ``store.migrations``)."""
        raise NotImplementedError
