"""Retries of transient errors, and a session that holds a slot and creates the schema."""

from __future__ import annotations

from pathlib import Path

import pytest

from store.database import PermanentDataError, TransientDatabaseError
from store.session import DatabaseSession, DatabaseSettings, with_retries


def test_transient_errors_are_retried_with_growing_jittered_backoff() -> None:
    calls, waits, slept = [], [], []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 4:
            raise TransientDatabaseError("connection lost")
        return "ok"

    assert with_retries(flaky, max_retries=5, on_wait=waits.append, sleep=slept.append) == "ok"
    assert len(calls) == 4 and waits == slept and len(slept) == 3
    for attempt, delay in enumerate(slept, start=1):
        assert 0.2 <= delay <= 0.2 * 2 ** attempt


def test_retries_give_up_after_max_retries_and_permanent_errors_are_not_retried() -> None:
    def down() -> None:
        raise TransientDatabaseError("still down")

    slept: list[float] = []
    with pytest.raises(TransientDatabaseError):
        with_retries(down, max_retries=2, on_wait=lambda _: None, sleep=slept.append)
    assert len(slept) == 2

    def bad() -> None:
        raise PermanentDataError("value too long")

    with pytest.raises(PermanentDataError):
        with_retries(bad, max_retries=5, on_wait=lambda _: None, sleep=slept.append)
    assert len(slept) == 2


def test_session_creates_the_schema_and_frees_its_slot(tmp_path: Path) -> None:
    settings = DatabaseSettings(f"sqlite:///{tmp_path / 's.db'}", max_connections=1)
    first = DatabaseSession(settings)
    assert first.run(lambda db: db.has_table("predictions"))
    first.close()
    second = DatabaseSession(settings)  # the only slot is free again
    assert second.run(lambda db: db.execute("SELECT count(*) FROM runs")) == [(0,)]
    second.close()
