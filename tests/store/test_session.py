"""A session that holds a slot, creates the schema and retries on a fresh connection."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from store.database import Database, TransientDatabaseError, connect
from store.session import DatabaseSession, DatabaseSettings


def test_session_creates_the_schema_and_frees_its_slot(tmp_path: Path) -> None:
    settings = DatabaseSettings(f"sqlite:///{tmp_path / 's.db'}", max_connections=1)
    first = DatabaseSession(settings)
    assert first.run(lambda db: db.has_table("predictions"))
    first.close()
    second = DatabaseSession(settings)  # the only slot is free again
    assert second.run(lambda db: db.execute("SELECT count(*) FROM runs")) == [(0,)]
    second.close()


def test_session_retries_a_lost_connection_on_a_new_one_and_counts_the_wait(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = DatabaseSettings(f"sqlite:///{tmp_path / 's.db'}", max_connections=1)
    opened: list[Database] = []

    def counting(url: str, **kwargs: Any) -> Database:
        opened.append(connect(url, **kwargs))
        return opened[-1]

    monkeypatch.setattr("store.session.connect", counting)
    monkeypatch.setattr("store.retry.time.sleep", lambda _: None)
    waits: list[float] = []
    session = DatabaseSession(settings, on_wait=waits.append)
    lost = [True]

    def once_lost(db: Database) -> list[tuple[Any, ...]]:
        if lost.pop() if lost else False:
            raise TransientDatabaseError("server closed the connection")
        return db.execute("SELECT count(*) FROM predictions")

    assert session.run(once_lost) == [(0,)]
    assert len(opened) == 2 and 0.2 <= max(waits)
    session.close()
    again = DatabaseSession(settings)  # the slot was held once and is free again
    assert again.run(lambda db: db.has_table("runs"))
    again.close()
