"""Schema versions and the migrations between them, applied by ``Database.init_schema``.

``schema_version`` holds every version applied. A new database gets the current schema
at once; an older one runs each migration after its version in order, in the same
transaction (PostgreSQL under an advisory lock, SQLite under ``BEGIN IMMEDIATE``), so
several workers starting together migrate it once, and existing rows are kept.

Version 3: the tracking tables ``monitoring`` and ``retrain_triggers`` (created by the
closing ``CREATE ... IF NOT EXISTS``; nothing else changes).

Version 2: predictions keyed by (tranche, doc_id, model_name, model_version) with the
record's ``position`` (rows from version 1 get position 0); ``host`` and ``pid`` on
runs and tranches; indexes on run_id and tranche; in PostgreSQL, ``timestamptz``
times and ``jsonb`` documents.
"""

from __future__ import annotations

from collections.abc import Callable

from store.database import Database
from store.schema import DEAD_LETTERS, PREDICTIONS, RUNS, SCHEMA_VERSION, TABLES, TRANCHES


def migrate(db: Database) -> None:
    """Bring ``db`` to ``SCHEMA_VERSION``; call inside the backend's migration lock."""
    db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    current = db.execute("SELECT max(version) FROM schema_version")[0][0]
    if current is None:
        for table in TABLES:
            for ddl in table.ddl(db.backend):
                db.execute(ddl)
        current = SCHEMA_VERSION
        _record(db, current)
    for version in range(current + 1, SCHEMA_VERSION + 1):
        MIGRATIONS[version][db.backend](db)
        _record(db, version)
    for table in TABLES:  # tables a later version added (CREATE ... IF NOT EXISTS)
        for ddl in table.ddl(db.backend):
            db.execute(ddl)


def _record(db: Database, version: int) -> None:
    db.execute(f"INSERT INTO schema_version VALUES ({db.placeholder})", [version])


def _v2_sqlite(db: Database) -> None:
    old = [c for c in PREDICTIONS.names if c != "position"]
    for ddl in PREDICTIONS.ddl("sqlite", name="predictions_v2")[:1]:
        db.execute(ddl)
    db.execute(f"INSERT INTO predictions_v2 ({', '.join(old)}, position) "
               f"SELECT {', '.join(old)}, 0 FROM predictions")
    db.execute("DROP TABLE predictions")
    db.execute("ALTER TABLE predictions_v2 RENAME TO predictions")
    _v2_common(db)


def _v2_common(db: Database) -> None:
    """What version 2 adds in both backends: the lease holder's host and pid on runs and
    tranches, and the indexes."""
    for table in (RUNS, TRANCHES):
        for column in ("host", "pid"):
            db.execute(f"ALTER TABLE {table.name} ADD COLUMN "
                       f"{table.column_sql(table.column(column), db.backend)}")
    for table in (PREDICTIONS, DEAD_LETTERS):
        for ddl in table.index_ddl(db.backend):
            db.execute(ddl)


def _v2_postgresql(db: Database) -> None:
    db.execute("ALTER TABLE predictions ADD COLUMN position BIGINT NOT NULL DEFAULT 0")
    db.execute("ALTER TABLE predictions ALTER COLUMN position DROP DEFAULT")
    db.execute("ALTER TABLE predictions DROP CONSTRAINT predictions_pkey")
    db.execute(f"ALTER TABLE predictions ADD PRIMARY KEY ({', '.join(PREDICTIONS.key)})")
    for table in (PREDICTIONS, DEAD_LETTERS, RUNS, TRANCHES):
        for c in table.columns:
            if c.type == "time":
                # Version 1 wrote ISO-8601 text; '' stood for "unknown".
                db.execute(f"ALTER TABLE {table.name} ALTER COLUMN {c.name} TYPE timestamptz "
                           f"USING CASE WHEN {c.name} = '' THEN now() "
                           f"ELSE {c.name}::timestamptz END")
            elif c.type == "json":
                db.execute(f"ALTER TABLE {table.name} ALTER COLUMN {c.name} TYPE jsonb "
                           f"USING {c.name}::jsonb")
    _v2_common(db)


def _tables_only(db: Database) -> None:
    """A version that only adds tables (created at the end of ``migrate``)."""


MIGRATIONS: dict[int, dict[str, Callable[[Database], None]]] = {
    2: {"sqlite": _v2_sqlite, "postgresql": _v2_postgresql},
    3: {"sqlite": _tables_only, "postgresql": _tables_only},
}
