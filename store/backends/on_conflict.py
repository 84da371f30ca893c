"""The upsert SQLite and PostgreSQL share: ``INSERT ... ON CONFLICT (key) DO UPDATE``.

For a table with ``prefer`` columns (``predictions``), the update applies only when
the new row comes from another run or sorts before the stored one by those columns
(see ``store.schema``); ``code_point_collation`` names the collation that makes text
compare by code point, as Python does, whatever the database's default.
"""

from __future__ import annotations

from collections.abc import Sequence

from store.backends.dialect import Dialect
from store.schema import Table


class OnConflictDialect(Dialect):
    code_point_collation = ""

    def upsert(self, table: Table, columns: Sequence[str] | None = None, *,
               source: str = "", only_if: str = "") -> str:
        cols = tuple(columns or table.names)
        updates = ", ".join(f"{c} = excluded.{c}" for c in cols if c not in table.key)
        sql = (f"INSERT INTO {table.name} ({', '.join(cols)}) "
               f"{source or self.values(len(cols))} ON CONFLICT ({', '.join(table.key)}) "
               + (f"DO UPDATE SET {updates}" if updates else "DO NOTHING"))
        conditions = [c for c in (self._preferred(table), only_if) if c]
        if updates and conditions:
            sql += " WHERE " + " AND ".join(
                conditions if len(conditions) == 1 else [f"({c})" for c in conditions])
        return sql

    def _preferred(self, table: Table) -> str:
        """The new row replaces the stored one: another run's, or the same run's that
        sorts first by ``prefer``."""
        if not table.prefer:
            return ""

        def ordered(name: str, c: str) -> str:
            text = self.code_point_collation and table.column(c).type == "text"
            return f"{name}.{c}" + (f' COLLATE "{self.code_point_collation}"' if text else "")

        mine = ", ".join(ordered(table.name, c) for c in table.prefer)
        new = ", ".join(ordered("excluded", c) for c in table.prefer)
        return f"{table.name}.run_id <> excluded.run_id OR ({new}) < ({mine})"
