"""The launcher's database calls retry transient errors on a new connection, for a
bounded number of tries, and raise every other error at once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipelines.configuration import connection
from pipelines.configuration.config import load_config
from pipelines.orchestration.launch import fail_run, finish_run, run_summary
from store import run_records
from store.database import Database, StatementError, TransientDatabaseError, connect


class _Dropping:
    """A connection whose first statement fails as if the server had restarted."""

    def __init__(self, db: Database, drops: list[int]):
        self.db, self.drops = db, drops
        self.dialect = db.dialect  # type: ignore[misc]

    def execute(self, sql: str, params: Any = ()) -> Any:
        if self.drops[0]:
            self.drops[0] -= 1
            raise TransientDatabaseError("terminating connection due to administrator command")
        return self.db.execute(sql, params)

    def execute_count(self, sql: str, params: Any = ()) -> int:
        if self.drops[0]:
            self.drops[0] -= 1
            raise TransientDatabaseError("terminating connection due to administrator command")
        return self.db.execute_count(sql, params)

    def upsert_run(self, row: dict[str, Any]) -> None:
        Database.upsert_run(self, row)  # type: ignore[arg-type]

    def init_schema(self) -> None:
        self.db.init_schema()

    def close(self) -> None:
        self.db.close()


@pytest.fixture
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    slept: list[float] = []
    monkeypatch.setattr("store.retry.time.sleep", slept.append)
    return slept


def test_the_launchers_run_records_survive_a_database_restart(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_sleep: list[float]) -> None:
    url = f"sqlite:///{tmp_path / 'l.db'}"
    cfg = load_config(None, {"db": url})
    db = connect(url)
    db.init_schema()
    run_records.start(db, "run-r", {}, "demo:1")
    db.close()
    drops = [0]
    opened: list[int] = []

    def dropping(u: str, **kwargs: Any) -> Database:
        opened.append(1)
        return _Dropping(connect(u, **kwargs), drops)  # type: ignore[return-value]

    monkeypatch.setattr(connection, "connect", dropping)
    drops[0] = 2
    finish_run(cfg.database, "run-r", "completed", {"total": {"written": 3}})
    drops[0] = 1
    assert run_summary(cfg.database, "run-r") == {"total": {"written": 3}}
    assert len(no_sleep) == 3 and len(opened) == 5  # every retry on a new connection
    db = connect(url)
    run_records.start(db, "run-f", {}, "demo:1")
    db.close()
    drops[0] = 1
    fail_run(cfg.database, "run-f", "cancelled")
    drops[0] = 1
    record = run_summary(cfg.database, "run-f")
    assert record is not None and record["error"] == "cancelled"


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """A patched clock that each backoff's sleep moves on: [now, slept ...]."""
    now = [0.0]

    def sleep(delay: float) -> None:
        now.append(delay)
        now[0] += delay

    monkeypatch.setattr("store.retry.time.sleep", sleep)
    monkeypatch.setattr("store.retry.time.monotonic", lambda: now[0])
    return now


def test_opening_a_database_that_stays_down_waits_out_the_connect_timeout(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clock: list[float]) -> None:
    cfg = load_config(None, {"db": f"sqlite:///{tmp_path / 'd.db'}", "sink.max_retries": 3,
                             "sink.connect_timeout_seconds": 60})
    tries: list[float] = []

    def refused(u: str, **kwargs: Any) -> Database:
        tries.append(clock[0])
        raise TransientDatabaseError("connection refused")

    monkeypatch.setattr(connection, "connect", refused)
    with pytest.raises(TransientDatabaseError), connection.opened(cfg.database):
        pass
    assert len(tries) > 4, "opening is bounded by the time window, not sink.max_retries"
    assert tries[-1] == 60.0, "the last try is made when the window ends, not before"
    assert sum(clock[1:]) == 60.0 and all(d <= 30.0 for d in clock[1:])


def test_a_call_on_an_open_database_fails_after_bounded_retries(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_sleep: list[float]) -> None:
    url = f"sqlite:///{tmp_path / 'b.db'}"
    cfg = load_config(None, {"db": url, "sink.max_retries": 3})
    drops = [0]
    tries: list[int] = []

    def dropping(u: str, **kwargs: Any) -> Database:
        tries.append(1)
        return _Dropping(connect(u, **kwargs), drops)  # type: ignore[return-value]

    monkeypatch.setattr(connection, "connect", dropping)
    with connection.opened(cfg.database, migrate=True) as db:
        drops[0] = 100
        tries.clear()
        with pytest.raises(TransientDatabaseError):
            db.execute("SELECT 1")
    assert len(tries) == 3 and len(no_sleep) == 3  # 1 + 3 tries, each retry reconnecting


def test_errors_that_are_not_transient_are_not_retried(
        tmp_path: Path, no_sleep: list[float]) -> None:
    cfg = load_config(None, {"db": f"sqlite:///{tmp_path / 'e.db'}"})
    with connection.opened(cfg.database, migrate=True) as db, pytest.raises(StatementError):
        db.execute("SELECT ?", [object()])  # not a value SQLite can bind
    assert no_sleep == []
