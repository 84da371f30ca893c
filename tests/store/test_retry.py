"""The retry policy: transient errors retried with growing jittered backoff for a
bounded number of tries and time, everything else raised at once; a Database whose
calls retry on a fresh connection."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest

from store.database import (
    Database,
    DatabaseUnreachable,
    PermanentDataError,
    TransientDatabaseError,
    connect,
)
from store.retry import Reconnecting, RetryingDatabase, RetryPolicy, with_retries
from store.schema import Column, Table


def test_transient_errors_are_retried_with_growing_jittered_backoff() -> None:
    calls: list[int] = []
    waits: list[float] = []
    slept: list[float] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 4:
            raise TransientDatabaseError("connection lost")
        return "ok"

    assert with_retries(flaky, RetryPolicy(5), on_wait=waits.append, sleep=slept.append) == "ok"
    assert len(calls) == 4 and len(slept) == 3  # told: each failed try and its backoff
    assert all(s <= w < s + 0.1 for w, s in zip(waits, slept, strict=True))
    for attempt, delay in enumerate(slept, start=1):
        assert 0.2 <= delay <= 0.2 * 2 ** attempt


def test_retries_give_up_after_max_retries_and_permanent_errors_are_not_retried() -> None:
    def down() -> None:
        raise TransientDatabaseError("still down")

    slept: list[float] = []
    with pytest.raises(TransientDatabaseError):
        with_retries(down, RetryPolicy(2), on_wait=lambda _: None, sleep=slept.append)
    assert len(slept) == 2

    def bad() -> None:
        raise PermanentDataError("value too long")

    with pytest.raises(PermanentDataError):
        with_retries(bad, RetryPolicy(5), on_wait=lambda _: None, sleep=slept.append)
    assert len(slept) == 2


def test_retries_stop_when_the_next_backoff_would_pass_the_time_bound() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(delay: float) -> None:
        slept.append(delay)
        now[0] += delay

    def down() -> None:
        raise TransientDatabaseError("still down")

    with pytest.raises(TransientDatabaseError):
        with_retries(down, RetryPolicy(100, max_seconds=10.0), sleep=sleep,
                     clock=lambda: now[0])
    assert slept and sum(slept) <= 10.0
    assert len(slept) < 100


class _Flaky:
    """Stands in for a connection: the first ``failures`` calls of each kind lose it."""

    opened: list[_Flaky] = []

    def __init__(self, db: Database, failures: dict[str, int]):
        self.db, self.failures, self.closed = db, failures, False
        self.dialect = db.dialect  # type: ignore[misc]
        _Flaky.opened.append(self)

    def _maybe_fail(self, kind: str) -> None:
        if self.failures.get(kind, 0) > 0:
            self.failures[kind] -= 1
            raise TransientDatabaseError(f"server closed the connection during {kind}")

    def execute(self, sql: str, params: Any = ()) -> Any:
        self._maybe_fail("execute")
        return self.db.execute(sql, params)

    def init_schema(self) -> None:
        self._maybe_fail("init_schema")
        self.db.init_schema()

    def close(self) -> None:
        self.closed = True
        self.db.close()


def test_a_retrying_database_reconnects_after_a_transient_error(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    failures = {"connect": 1, "init_schema": 1, "execute": 2}
    slept: list[float] = []
    _Flaky.opened.clear()

    def flaky_connect() -> Database:
        if failures["connect"]:
            failures["connect"] -= 1
            raise TransientDatabaseError("connection refused")
        return _Flaky(connect(url), failures)  # type: ignore[return-value]

    db = RetryingDatabase(flaky_connect, RetryPolicy(5), sleep=slept.append)
    db.init_schema()
    assert db.execute("SELECT count(*) FROM runs") == [(0,)]
    assert db.placeholder == "?" and db.dialect.name == "sqlite"
    db.close()
    assert len(slept) == 4  # a refused connection, one lost migration, two lost queries
    assert len(_Flaky.opened) == 4 and all(c.closed for c in _Flaky.opened)


def test_a_retrying_database_raises_data_errors_at_once(tmp_path: Path) -> None:
    slept: list[float] = []
    db = RetryingDatabase(lambda: connect(f"sqlite:///{tmp_path / 'r.db'}"), RetryPolicy(5),
                          sleep=slept.append)
    db.init_schema()
    db.execute("CREATE TABLE strict (k TEXT PRIMARY KEY, x TEXT CHECK (length(x) < 3))")
    with pytest.raises(PermanentDataError):
        db.upsert(Table("strict", (Column("k"), Column("x")), key=("k",)), [("a", "long")])
    assert slept == []
    db.close()


def test_every_database_method_is_retried_by_the_retrying_database() -> None:
    """A method added to Database must be added to RetryingDatabase as well."""
    methods = {name for name, _ in inspect.getmembers(Database, inspect.isfunction)
               if not name.startswith("_")} - RetryingDatabase.COMPOSED
    assert {name for name in methods if name in vars(RetryingDatabase)} == methods


def test_a_database_away_is_waited_for_its_window_whatever_the_count_of_tries() -> None:
    """``away_seconds`` bounds a ``DatabaseUnreachable`` (a restart, a refused
    connection), ``max_retries`` every other transient error."""
    now = [0.0]
    slept: list[float] = []

    def sleep(delay: float) -> None:
        slept.append(delay)
        now[0] += delay

    def away_until(t: float) -> Any:
        def call() -> str:
            if now[0] < t:
                raise DatabaseUnreachable("connection refused")
            return "back"
        return call

    policy = RetryPolicy(2, away_seconds=60.0)
    assert with_retries(away_until(40.0), policy, sleep=sleep, clock=lambda: now[0]) == "back"
    assert len(slept) > 2 and 40.0 <= now[0] <= 60.0
    now[0], slept[:] = 0.0, []
    with pytest.raises(DatabaseUnreachable):
        with_retries(away_until(1e9), policy, sleep=sleep, clock=lambda: now[0])
    assert now[0] == pytest.approx(60.0)  # the last try at the end of the window
    now[0], slept[:] = 0.0, []

    def locked() -> None:
        raise TransientDatabaseError("lock timeout")

    with pytest.raises(TransientDatabaseError):
        with_retries(locked, policy, sleep=sleep, clock=lambda: now[0])
    assert len(slept) == 2
    now[0], slept[:] = 0.0, []
    with pytest.raises(DatabaseUnreachable):  # no window: the count bounds it too
        with_retries(away_until(1e9), RetryPolicy(2), sleep=sleep, clock=lambda: now[0])
    assert len(slept) == 2


def test_the_wait_told_is_the_failed_try_and_its_backoff_counted_once() -> None:
    """A statement that waited 3 s for a lock and then timed out: on_wait is told the
    3 s and the backoff; a wait the session told already (for a slot) is not told
    again."""
    now = [0.0]
    told: list[float] = []
    slept: list[float] = []

    def sleep(delay: float) -> None:
        slept.append(delay)
        now[0] += delay

    tries = [0]

    def blocked() -> str:
        tries[0] += 1
        if tries[0] == 1:
            now[0] += 3.0
            raise TransientDatabaseError("canceling statement due to statement timeout")
        return "ok"

    assert with_retries(blocked, RetryPolicy(3), on_wait=told.append, sleep=sleep,
                        clock=lambda: now[0]) == "ok"
    assert told == [pytest.approx(3.0 + slept[0])]

    def slot_then_timeout(db: Any) -> str:
        session._report(2.0)  # waited 2 s for a connection slot, then 3 s on a lock
        now[0] += 5.0
        raise TransientDatabaseError("canceling statement due to statement timeout")

    told.clear()
    slept.clear()
    session = Reconnecting(_FakeDb, RetryPolicy(1), on_wait=told.append,
                           sleep=slept.append, clock=lambda: now[0])
    with pytest.raises(TransientDatabaseError):
        session.run(slot_then_timeout)
    assert told[:2] == [2.0, pytest.approx(3.0 + slept[0])]


class _FakeDb:
    def close(self) -> None:
        pass
