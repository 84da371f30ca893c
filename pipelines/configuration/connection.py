"""The configured database as the launcher and the commands open it: the URL, the
password's environment variable and the statement timeout of the config, closed after
use, its schema created or migrated where the caller writes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from pipelines.configuration.config import Config
from store.database import Database, connect


def open_database(cfg: Config, migrate: bool = False) -> Database:
    db = connect(cfg.db, password_env=cfg.sink.password_env,
                 statement_timeout_ms=cfg.sink.statement_timeout_ms)
    if migrate:
        try:
            db.init_schema()
        except BaseException:
            db.close()
            raise
    return db


@contextmanager
def opened(cfg: Config, migrate: bool = False) -> Iterator[Database]:
    db = open_database(cfg, migrate)
    try:
        yield db
    finally:
        db.close()
