"""A session that holds a slot, creates the schema and retries on a fresh connection."""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from store.database import Database, TransientDatabaseError, connect
from store.file_locks import WriterLock
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


def test_a_writer_gives_its_slot_up_after_a_write_when_another_waits(tmp_path: Path) -> None:
    """With more workers than ``max_connections``, a waiting worker gets a slot after
    the holder's next write, not when the holder's bundle ends (no convoy)."""
    settings = DatabaseSettings(f"sqlite:///{tmp_path / 's.db'}", max_connections=1,
                                state_dir=str(tmp_path / "state"))
    holder, waiter = DatabaseSession(settings), DatabaseSession(settings)
    count = "SELECT count(*) FROM runs"
    assert holder.write(lambda db: db.execute(count)) == [(0,)]
    assert holder.yielded == 0  # nobody waited: the connection is kept
    done = threading.Event()
    thread = threading.Thread(target=lambda: (waiter.write(lambda db: db.execute(count)),
                                              done.set()), daemon=True)
    thread.start()
    time.sleep(0.3)
    assert not done.is_set()  # the only slot is the holder's
    time.sleep(holder.MIN_HOLD_SECONDS)
    holder.write(lambda db: db.execute(count))  # a write of the still open bundle
    assert done.wait(5), "the waiting writer never got the slot"
    assert holder.yielded == 1
    waiter.close()
    holder.close()


def test_a_first_connections_schema_check_waits_for_the_sqlite_writer_and_counts_it(
        tmp_path: Path) -> None:
    """The schema check of a session's first connection is a write transaction on
    SQLite: it queues on the machine's writer lock like a write, and the sink counts the
    wait as waiting for the database (not hidden in SQLite's busy handler)."""
    settings = DatabaseSettings(f"sqlite:///{tmp_path / 's.db'}", max_connections=2,
                                state_dir=str(tmp_path / "state"))
    writer = DatabaseSession(settings)
    writer.run(lambda db: None)  # connected and the schema made before the race
    writing = threading.Event()
    errors: list[BaseException] = []

    def long_write(db: Database) -> None:
        db.execute("INSERT INTO runs (run_id, started_at, status, config, model) "
                   "VALUES ('r', '2026-01-01', 'running', '{}', 'm')")
        writing.set()
        time.sleep(1.0)

    def write() -> None:
        try:
            writer.write(long_write)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    thread = threading.Thread(target=write)
    thread.start()
    assert writing.wait(10)
    waits: list[float] = []
    newcomer = DatabaseSession(settings, on_wait=waits.append)
    newcomer.run(lambda db: None)  # its first connection checks the schema
    thread.join(timeout=10)
    assert errors == [] and not thread.is_alive()
    assert sum(waits) >= 0.5, waits
    for s in (writer, newcomer):
        s.close()


def test_sqlite_writers_of_one_machine_take_turns(tmp_path: Path) -> None:
    """SQLite has one writer: sessions on one machine write one transaction at a time
    (queued on the machine's writer lock), and the wait is counted for the database."""
    settings = DatabaseSettings(f"sqlite:///{tmp_path / 's.db'}", max_connections=2,
                                state_dir=str(tmp_path / "state"))
    inside: list[int] = []
    peak: list[int] = []
    waits: list[float] = []

    def slow(db: Database) -> None:
        inside.append(1)
        peak.append(len(inside))
        time.sleep(0.2)
        inside.pop()

    sessions = [DatabaseSession(settings, on_wait=waits.append) for _ in range(2)]
    for session in sessions:  # connected, schema ready: what follows waits only on writes
        session.run(lambda db: None)
    errors: list[BaseException] = []

    def write(session: DatabaseSession) -> None:
        try:
            session.write(slow)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(s,)) for s in sessions]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == [] and not any(t.is_alive() for t in threads)
    assert max(peak) == 1 and len(peak) == 2
    assert max(waits) >= 0.15
    for s in sessions:
        s.close()


def test_a_session_says_whether_it_could_write_now_and_never_waits_to_say_it(
        tmp_path: Path) -> None:
    """``ready``: true while the session holds its slot (or takes a free one) and the
    machine's SQLite writer is free; a session that finds the slots taken is counted as
    waiting, so the holder gives its slot up after its next write."""
    settings = DatabaseSettings(f"sqlite:///{tmp_path / 's.db'}", max_connections=1,
                                state_dir=str(tmp_path / "state"))
    holder, other = DatabaseSession(settings), DatabaseSession(settings)
    count = "SELECT count(*) FROM runs"
    assert holder.ready()
    assert holder.write(lambda db: db.execute(count)) == [(0,)]
    gone = DatabaseSession(settings)
    assert not gone.ready()
    gone.close()  # wanted a slot, then closed: wants none now
    time.sleep(holder.MIN_HOLD_SECONDS)
    holder.write(lambda db: db.execute(count))
    assert holder.yielded == 0
    started = time.monotonic()
    assert not other.ready() and not other.ready()
    assert time.monotonic() - started < 3.0
    holder.write(lambda db: db.execute(count))
    assert holder.yielded == 1  # gave its slot up to the session that wants one
    assert other.ready()
    writer = WriterLock(settings.identity, settings.state_dir)
    writer.acquire()  # another process's SQLite write under way
    assert not other.ready()
    writer.release()
    assert other.ready()
    assert other.write(lambda db: db.execute(count)) == [(0,)]
    other.close()
    holder.close()


def test_a_session_about_to_wait_takes_the_slot_an_idle_one_of_its_process_holds(
        tmp_path: Path) -> None:
    """Predictions and dead letters are written from one thread: with one slot, the
    session that needs it gets it from the other at once instead of waiting for a
    write the other can never make (here the wait would end in a LockWaitTimeout after
    ``lease_seconds``, then fail unretried)."""
    settings = DatabaseSettings(f"sqlite:///{tmp_path / 's.db'}", max_connections=1,
                                state_dir=str(tmp_path / "state"), lease_seconds=5,
                                max_retries=0)
    predictions, dead_letters = DatabaseSession(settings), DatabaseSession(settings)
    count = "SELECT count(*) FROM runs"
    assert predictions.write(lambda db: db.execute(count)) == [(0,)]
    started = time.monotonic()
    assert dead_letters.write(lambda db: db.execute(count)) == [(0,)]
    assert predictions.write(lambda db: db.execute(count)) == [(0,)]
    assert time.monotonic() - started < 4.0
    assert (predictions.yielded, dead_letters.yielded) == (1, 1)
    dead_letters.close()
    predictions.close()


def test_a_redis_slot_that_expired_under_an_idle_session_is_taken_again_before_its_next_call(
        tmp_path: Path) -> None:
    """With Redis a slot is a key with a TTL: one that ran out while its session sat idle
    (and that another session took) is not used as if still held; the session waits for
    a slot again, so the job never has more connections than ``max_connections``."""
    import redis

    client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    settings = DatabaseSettings(f"sqlite:///{tmp_path / 's.db'}", max_connections=1,
                                redis_url="redis://127.0.0.1:6379/0", state_dir=str(tmp_path))
    digest = hashlib.sha256(settings.identity.encode()).hexdigest()[:16]
    a, b = DatabaseSession(settings), DatabaseSession(settings)
    assert a.run(lambda db: db.execute("SELECT 1")) == [(1,)]
    [key] = client.keys(f"beamscore:slot:{digest}:*")
    client.delete(key)  # the TTL ran out
    events: list[str] = []
    taken = threading.Event()

    def other_writer() -> None:  # another worker's thread takes the only slot
        events.append(f"b took it: {b.ready()}")
        taken.set()
        time.sleep(0.3)
        events.append("b releases")
        b.close()

    t = threading.Thread(target=other_writer)
    t.start()
    taken.wait()
    a.run(lambda db: events.append("a runs"))
    t.join()
    assert events == ["b took it: True", "b releases", "a runs"]
    assert client.get(key) is not None  # a holds it again
    a.close()
    assert client.get(key) is None


def test_a_redis_that_does_not_answer_when_a_held_slot_is_renewed_is_waited_for(
        tmp_path: Path) -> None:
    """A dropped Redis connection when a session renews its slot (``keep``, before each
    call) is retried like a database away, not a failed write."""
    from store.limits import RedisUnreachable

    settings = DatabaseSettings(f"sqlite:///{tmp_path / 's.db'}", max_connections=1,
                                redis_url="redis://127.0.0.1:6379/0", state_dir=str(tmp_path),
                                connect_timeout_seconds=30)
    session = DatabaseSession(settings)
    assert session.run(lambda db: db.execute("SELECT 1")) == [(1,)]
    slots = session._slots
    assert slots is not None
    keep, answers = slots.keep, iter([RedisUnreachable("Redis does not answer"), None])

    def flaky() -> bool:
        if (failure := next(answers, None)) is not None:
            raise failure
        return keep()

    slots.keep = flaky  # type: ignore[method-assign]
    assert session.run(lambda db: db.execute("SELECT 2")) == [(2,)]
    session.close()
