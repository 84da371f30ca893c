"""The machine's file locks: a wait for a connection slot or the writer lock is bounded
(on a patched clock), and a holder that dies frees its lock at once (real processes)."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
import time
from typing import Any

import pytest

from store.database import TransientDatabaseError
from store.file_locks import ExclusiveLock, FileSlots, LockWaitTimeout, WriterLock


class FakeClock:
    """Time that moves only by ``step`` per reading and by what is slept."""

    def __init__(self, step: float = 0.0):
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_a_slot_wait_is_bounded_and_names_the_slot_files(tmp_path: Any) -> None:
    holder = FileSlots("db", 1, str(tmp_path))
    assert holder.acquire() == 0.0  # a live holder that never lets go
    clock = FakeClock()
    waiter = FileSlots("db", 1, str(tmp_path), timeout=120.0, clock=clock,
                       sleep=clock.sleep)
    with pytest.raises(LockWaitTimeout) as raised:
        waiter.acquire(poll=1.0)
    assert isinstance(raised.value, TransientDatabaseError)  # the session retries it
    assert 120.0 <= raised.value.waited <= 121.0 and "120.0s" in str(raised.value)
    assert "slot0.lock" in str(raised.value)
    holder.release()
    assert waiter.acquire() == 0.0  # nothing was left held by the wait that gave up
    waiter.release()


def test_a_writer_lock_wait_is_bounded_and_a_late_helper_lets_go(tmp_path: Any) -> None:
    """The waiter gives up at the bound; its helper thread, still blocked in flock, takes
    the lock when the holder lets go and releases it at once."""
    holder = WriterLock("db", str(tmp_path))
    holder.acquire()
    waiter = WriterLock("db", str(tmp_path), timeout=120.0, clock=FakeClock(step=30.0))
    with pytest.raises(LockWaitTimeout) as raised:
        waiter.acquire()
    assert raised.value.waited >= 120.0 and "writer.lock" in str(raised.value)
    holder.release()
    other = WriterLock("db", str(tmp_path), timeout=5.0)
    assert other.acquire() < 5.0
    other.release()


def test_waits_that_time_out_share_one_helper_thread(tmp_path: Any) -> None:
    """Five waits that give up behind a holder that never lets go leave one helper
    thread blocked in flock, not five; the next waiter takes it over and gets the lock
    as soon as the holder releases, and no helper is left."""

    holder = WriterLock("db", str(tmp_path))
    holder.acquire()

    def helpers() -> int:  # of this lock file (other tests of the process have their own)
        return sum(t.name == f"beamscore-writer-lock {holder._path}"
                   for t in threading.enumerate())

    before = helpers()
    for _ in range(5):
        with pytest.raises(LockWaitTimeout):
            WriterLock("db", str(tmp_path), timeout=60.0, clock=FakeClock(step=30.0)).acquire()
    assert helpers() - before == 1
    holder.release()
    waiter = WriterLock("db", str(tmp_path), timeout=5.0)
    assert waiter.acquire() < 5.0
    waiter.release()
    deadline = time.monotonic() + 5  # the helper thread ends right after handing over
    while helpers() > before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert helpers() == before


def test_a_writer_lock_waiter_wakes_when_the_holder_releases(tmp_path: Any) -> None:
    holder = WriterLock("db", str(tmp_path))
    holder.acquire()
    waiter = WriterLock("db", str(tmp_path), timeout=30.0)
    waited: list[float] = []
    thread = threading.Thread(target=lambda: waited.append(waiter.acquire()))
    thread.start()
    time.sleep(0.2)
    assert not waited
    holder.release()
    thread.join(timeout=10)
    assert waited and 0.15 <= waited[0] < 5.0
    waiter.release()


def _hold_forever(kind: str, directory: str, ready: Any) -> None:
    lock: Any = FileSlots("db", 1, directory) if kind == "slot" else WriterLock("db", directory)
    lock.acquire()
    ready.set()
    time.sleep(3600)


@pytest.mark.parametrize("kind", ["slot", "writer"])
def test_a_holder_that_dies_frees_its_lock_at_once(kind: str, tmp_path: Any) -> None:
    """The kernel releases a dead process's flock: a waiter gets the slot or the writer
    lock as soon as the holder is killed, long before any bound."""
    ctx = mp.get_context("fork")
    ready = ctx.Event()
    holder = ctx.Process(target=_hold_forever, args=(kind, str(tmp_path), ready))
    holder.start()
    assert ready.wait(10)
    lock: Any = (FileSlots("db", 1, str(tmp_path), timeout=60.0) if kind == "slot"
                 else WriterLock("db", str(tmp_path), timeout=60.0))
    waited: list[float] = []
    thread = threading.Thread(target=lambda: waited.append(lock.acquire()))
    thread.start()
    time.sleep(0.3)
    assert not waited  # held by the live process
    assert holder.pid is not None
    os.kill(holder.pid, signal.SIGKILL)
    holder.join(timeout=10)
    thread.join(timeout=10)
    assert waited and waited[0] < 10.0
    lock.release()


def test_a_session_counts_and_retries_a_slot_wait_that_timed_out(tmp_path: Any) -> None:
    """The bounded wait is counted as waiting for the database and retried; once the
    slot is free the session holds it and writes."""
    from store.session import DatabaseSession, DatabaseSettings

    settings = DatabaseSettings(f"sqlite:///{tmp_path / 'w.db'}", max_connections=1,
                                state_dir=str(tmp_path), lease_seconds=1, max_retries=1)
    holder = FileSlots(settings.identity, 1, str(tmp_path))
    holder.acquire()
    waits: list[float] = []
    session = DatabaseSession(settings, waits.append)
    with pytest.raises(LockWaitTimeout):
        session.run(lambda db: db.execute("SELECT 1"))
    assert sum(waits) >= 2.0  # two bounded waits of 1 s, and the backoff between
    holder.release()
    assert session.run(lambda db: db.execute("SELECT 1")) == [(1,)]
    with pytest.raises(LockWaitTimeout):  # the session holds the slot while connected
        FileSlots(settings.identity, 1, str(tmp_path), timeout=0.0).acquire()
    session.close()


def test_the_writer_lock_says_whether_it_is_free_without_taking_it(tmp_path: Any) -> None:
    first, second = WriterLock("db", str(tmp_path)), WriterLock("db", str(tmp_path))
    assert first.free() and second.free()
    first.acquire()
    assert not first.free() and not second.free()
    first.release()
    assert second.free()
    assert second.acquire() < 0.5  # free() took nothing
    second.release()


def test_only_the_first_slot_waiter_looks_at_the_slots(tmp_path: Any) -> None:
    """Waiters queue in the kernel: while one waiter polls the slot files every 5 ms, a
    second one sleeps in flock and only tries once a tick (eight waiting workers cost
    about what one does); each gets the slot in turn as the holders let go."""
    holder = FileSlots("db", 1, str(tmp_path))
    holder.acquire()
    polls = {"first": 0, "second": 0}

    def counting(name: str) -> Any:
        def sleep(seconds: float) -> None:
            polls[name] += 1
            time.sleep(seconds)
        return sleep

    first = FileSlots("db", 1, str(tmp_path), timeout=30.0, sleep=counting("first"))
    second = FileSlots("db", 1, str(tmp_path), timeout=30.0, sleep=counting("second"))
    got: list[str] = []
    threads = [threading.Thread(target=lambda: (first.acquire(), got.append("first")))]
    threads[0].start()
    deadline = time.monotonic() + 10
    while polls["first"] < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    threads.append(threading.Thread(target=lambda: (second.acquire(), got.append("second"))))
    threads[1].start()
    time.sleep(0.3)
    assert polls["first"] >= 20 and polls["second"] == 0 and not got
    assert first.contended()  # both count as waiting for the holder to see
    holder.release()  # one of the two takes it (the queued one tries every tick too)
    deadline = time.monotonic() + 10
    while not got and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(got) == 1
    slots = {"first": first, "second": second}
    slots[got[0]].release()  # ... and the other one then
    for thread in threads:
        thread.join(timeout=10)
    assert sorted(got) == ["first", "second"]
    slots[got[1]].release()


def test_a_slot_wait_behind_another_waiter_is_bounded(tmp_path: Any) -> None:
    """A waiter queued behind another gives up at its own bound, naming the slots."""
    holder = FileSlots("db", 1, str(tmp_path))
    holder.acquire()
    head = FileSlots("db", 1, str(tmp_path), timeout=30.0)
    thread = threading.Thread(target=head.acquire)  # heads the queue, then gets the slot
    thread.start()
    time.sleep(0.1)
    queued = FileSlots("db", 1, str(tmp_path), timeout=120.0, clock=FakeClock(step=30.0))
    with pytest.raises(LockWaitTimeout) as raised:
        queued.acquire()
    assert raised.value.waited >= 120.0 and "slot0.lock" in str(raised.value)
    holder.release()
    thread.join(timeout=10)
    head.release()


def _wait_for_a_slot(directory: str) -> None:
    FileSlots("db", 1, directory, timeout=60.0).acquire()


def test_a_waiter_stopped_at_the_head_of_the_queue_delays_no_other(tmp_path: Any) -> None:
    """The first waiter is stopped (SIGSTOP) while it heads the queue, holding no slot:
    the next waiter still gets the slot within a tick of its being let go."""
    holder = FileSlots("db", 1, str(tmp_path))
    holder.acquire()
    ctx = mp.get_context("fork")
    head = ctx.Process(target=_wait_for_a_slot, args=(str(tmp_path),))
    head.start()
    time.sleep(0.5)
    assert head.pid is not None
    os.kill(head.pid, signal.SIGSTOP)
    try:
        threading.Timer(0.3, holder.release).start()
        started = time.monotonic()
        second = FileSlots("db", 1, str(tmp_path), timeout=30.0)
        second.acquire()
        assert time.monotonic() - started < 2.0
        second.release()
    finally:
        os.kill(head.pid, signal.SIGKILL)
        head.join(timeout=10)


def _wait_in_child(path: str, out: Any) -> None:
    started = time.monotonic()
    try:
        ExclusiveLock(path, "the lock", timeout=10.0).acquire()
        out.put(time.monotonic() - started)
    except LockWaitTimeout:
        out.put(None)


def test_a_forked_child_waits_for_no_helper_and_holds_no_lock_of_its_parent(
        tmp_path: Any) -> None:
    """A wait that timed out leaves its helper thread blocked in flock. A child forked
    then has no such thread and must neither wait for it nor keep, through its copy of
    the helper's file, the lock the helper takes: it gets the lock once it is free."""
    path = str(tmp_path / "q.lock")
    ctx = mp.get_context("fork")
    ready = ctx.Event()
    holder = ctx.Process(target=_hold_for, args=(path, ready, 1.5))
    holder.start()
    assert ready.wait(10)
    with pytest.raises(LockWaitTimeout):
        ExclusiveLock(path, "the lock", timeout=0.2).acquire()  # its helper stays pending
    out = ctx.Queue()
    child = ctx.Process(target=_wait_in_child, args=(path, out))
    child.start()
    waited = out.get(timeout=30)
    child.join(timeout=10)
    holder.join(timeout=10)
    assert waited is not None and waited < 5.0


def _hold_for(path: str, ready: Any, seconds: float) -> None:
    lock = ExclusiveLock(path, "the lock")
    lock.acquire()
    ready.set()
    time.sleep(seconds)
