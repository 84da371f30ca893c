"""Rate limiters and connection slots, across real processes (and the real Redis).

The properties a database depends on: rows committed in any 1-second window never
exceed the budget, however many processes write; the average stays near the budget;
never more connection holders than slots. The schedule itself is checked on a patched
clock; sharing it across processes takes real processes and real time.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
import uuid
from typing import Any

import pytest

from store.file_locks import FileSlots
from store.limits import (
    LockWaitTimeout,
    MachineRateLimiter,
    RedisRateLimiter,
    RedisSlots,
    SlidingWindowLimiter,
    StateUser,
)

REDIS = os.environ.get("BEAMSCORE_TEST_REDIS", "redis://127.0.0.1:6379/15")


def _writer(kind: str, key: str, rate: float, batch: int, seconds: float, directory: str,
            out: Any, one_slot: bool) -> None:
    limiter: Any = (MachineRateLimiter(key, rate, directory) if kind == "machine"
                    else RedisRateLimiter(REDIS, key, rate))
    slot = FileSlots(key, 1, directory) if one_slot else None
    commits = []
    end = time.time() + seconds
    while time.time() < end:
        limiter.allow(hits_added=batch)
        if slot is None:
            time.sleep(0.005)  # the "write"
        else:  # the write waits for the only connection slot; every 4th one stalls
            slot.acquire(poll=0.001)
            time.sleep(0.8 if len(commits) % 4 == 3 else 0.005)
            slot.release()
        commits.append(time.time())
        limiter.done()
    out.put(commits)


def _run_writers(kind: str, tmp_path: Any, rate: float, batch: int, procs: int = 3,
                 seconds: float = 3.0, one_slot: bool = False) -> list[float]:
    key, q = uuid.uuid4().hex, mp.get_context("fork").Queue()
    ps = [mp.get_context("fork").Process(
        target=_writer, args=(kind, key, rate, batch, seconds, str(tmp_path), q, one_slot))
        for _ in range(procs)]
    for p in ps:
        p.start()
    commits = sorted(t for _ in ps for t in q.get(timeout=30))
    for p in ps:
        p.join(timeout=30)
    return commits


def _worst_window(commits: list[float], batch: int) -> int:
    worst, j = 0, 0
    for i, t in enumerate(commits):
        while commits[j] <= t - 1.0:
            j += 1
        worst = max(worst, (i - j + 1) * batch)
    return worst


def test_machine_limiter_caps_every_window_across_processes(tmp_path: Any) -> None:
    rate, batch = 1000, 50
    commits = _run_writers("machine", tmp_path, rate, batch)
    assert _worst_window(commits, batch) <= rate
    average = (len(commits) - 1) * batch / (commits[-1] - commits[0])
    # The limiter must not hold writers far below the rate; on 2 busy cores the writer
    # processes themselves reached 0.797 of it once, so the bound leaves them room.
    assert average >= 0.7 * rate


def test_machine_limiter_disabled_at_zero(tmp_path: Any) -> None:
    limiter = MachineRateLimiter("x", 0, str(tmp_path))
    started = time.monotonic()
    for _ in range(1000):
        limiter.allow(hits_added=1000)
        limiter.done()
    assert time.monotonic() - started < 1.0
    assert limiter.last_wait == 0.0


class FakeTime:
    """A clock that only moves when someone sleeps on it (or a write takes time)."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def _fake_limiter(t: FakeTime, tmp_path: Any, rate: float, name: str = "k",
                  kind: str = "machine") -> SlidingWindowLimiter:
    if kind == "redis":
        return RedisRateLimiter(REDIS, f"{tmp_path}:{name}", rate, clock=t.clock,
                                sleep=t.sleep)
    return MachineRateLimiter(name, rate, str(tmp_path), clock=t.clock, sleep=t.sleep)


@pytest.mark.parametrize("kind", ["machine", "redis"])
@pytest.mark.parametrize("rate, batch, write_seconds", [
    (100, 25, 0.01), (100, 100, 0.2), (5000, 1000, 0.05), (50, 7, 0.0)])
def test_limiter_schedule_on_a_patched_clock(tmp_path: Any, rate: float, batch: int,
                                             write_seconds: float, kind: str) -> None:
    t = FakeTime()
    writers = [_fake_limiter(t, tmp_path, rate, kind=kind) for _ in range(3)]
    commits = []
    for i in range(60):
        w = writers[i % 3]
        w.allow(hits_added=batch)
        t.now += write_seconds
        commits.append(t.now)
        w.done()
    assert _worst_window(commits, batch) <= rate
    average = (len(commits) - 1) * batch / (commits[-1] - commits[0])
    assert average >= 0.8 * rate


@pytest.mark.parametrize("kind", ["machine", "redis"])
def test_a_clock_stepped_back_costs_writers_a_second_not_the_step(
        tmp_path: Any, kind: str) -> None:
    """An NTP correction or a restored VM sets the clock back an hour: the times in the
    state are then later than now, and count as now; the next write waits at most a
    second and one write, and the writes after it keep the rate."""
    t = FakeTime()
    writers = [_fake_limiter(t, tmp_path, 300, kind=kind) for _ in range(2)]
    for i in range(4):
        writers[i % 2].allow(hits_added=75)
        t.now += 0.01
        writers[i % 2].done()
    t.now -= 3600.0
    started = t.now
    writers[0].allow(hits_added=75)
    writers[0].done()
    assert t.now - started <= 1.0 + 75 / 300 + 0.01
    commits = []
    for i in range(40):
        writers[i % 2].allow(hits_added=75)
        t.now += 0.01
        commits.append(t.now)
        writers[i % 2].done()
    assert _worst_window(commits, 75) <= 300


def test_dead_writer_in_flight_entry_expires(tmp_path: Any) -> None:
    t = FakeTime()
    limiter = _fake_limiter(t, tmp_path, 100, "y")
    limiter.STALE_SECONDS = 0.3
    limiter.allow(hits_added=100)  # books the whole budget and never reports done()
    other = _fake_limiter(t, tmp_path, 100, "y")
    other.STALE_SECONDS = 0.3
    started = t.now
    other.allow(hits_added=10)
    assert 0.25 <= t.now - started < 3.0
    assert other.last_wait == pytest.approx(t.now - started)


@pytest.mark.parametrize("kind", ["machine", "redis"])
def test_a_killed_writers_booking_holds_no_budget_once_its_process_is_gone(
        tmp_path: Any, kind: str) -> None:
    """A writer killed between booking and commit (kill -9 of a run) leaves an in-flight
    entry; the next run's writers do not wait STALE_SECONDS (300 s) for it: its process
    is gone. A live writer's booking still counts."""
    t = FakeTime()
    child = os.fork()
    if child == 0:  # books the whole budget, then dies without done()
        _fake_limiter(t, tmp_path, 100, "z", kind).allow(hits_added=100)
        os._exit(0)
    os.waitpid(child, 0)
    other = _fake_limiter(t, tmp_path, 100, "z", kind)
    started = t.now
    other.allow(hits_added=100)
    assert t.now - started <= 1.0  # only the pacing of the dead booking: 100 rows at 100/s
    t.now += 10.0  # the live booking is pacing-free now, yet in flight
    third = _fake_limiter(t, tmp_path, 100, "z", kind)
    third.STALE_SECONDS = 50.0
    started = t.now
    third.allow(hits_added=100)  # waits for the live one: until it is stale
    assert 40.0 <= t.now - started <= 51.0


def _holder(name: str, n: int, directory: str, log: Any) -> None:
    slots = FileSlots(name, n, directory)
    for _ in range(5):
        slots.acquire(poll=0.005)
        log.put(("in", time.time()))
        time.sleep(0.02)
        log.put(("out", time.time()))
        slots.release()


def test_file_slots_never_exceed_n_holders(tmp_path: Any) -> None:
    ctx = mp.get_context("fork")
    log = ctx.Queue()
    ps = [ctx.Process(target=_holder, args=("db", 2, str(tmp_path), log)) for _ in range(5)]
    for p in ps:
        p.start()
    for p in ps:
        p.join(timeout=30)
    events = sorted((log.get(timeout=5) for _ in range(50)), key=lambda e: (e[1], e[0] == "in"))
    holders = peak = 0
    for kind, _ in events:
        holders += 1 if kind == "in" else -1
        peak = max(peak, holders)
    assert peak == 2


@pytest.fixture
def redis_ok() -> None:
    import redis

    try:
        redis.Redis.from_url(REDIS).ping()
    except redis.ConnectionError as exc:  # pragma: no cover - the machine runs Redis
        pytest.fail(f"Redis is not reachable at {REDIS}: {exc}")


def test_redis_limiter_is_job_wide(redis_ok: None, tmp_path: Any) -> None:
    rate, batch = 1000, 50
    commits = _run_writers("redis", tmp_path, rate, batch)
    assert _worst_window(commits, batch) <= rate
    average = (len(commits) - 1) * batch / (commits[-1] - commits[0])
    assert 0.7 * rate <= average <= rate


@pytest.mark.parametrize("kind", ["machine", "redis"])
def test_writes_that_queue_after_booking_never_commit_in_a_burst(
        redis_ok: None, tmp_path: Any, kind: str) -> None:
    """Writers book, then queue for the one connection slot behind a write that stalls
    (a lock, a slow disk): the queued writes then commit back to back. They were all
    counted from their booking to their commit, so no 1-second window of commits holds
    more than the rate."""
    rate, batch = 1000, 250
    commits = _run_writers(kind, tmp_path, rate, batch, procs=4, seconds=4.0,
                           one_slot=True)
    assert len(commits) >= 8
    assert _worst_window(commits, batch) <= rate


def test_a_booking_of_another_host_is_judged_by_age(redis_ok: None, tmp_path: Any) -> None:
    """In Redis, an in-flight booking of a writer on another machine cannot be checked
    by its process: it counts until it commits or turns ``STALE_SECONDS`` old."""
    import json

    import redis

    t = FakeTime()
    first = _fake_limiter(t, tmp_path, 100, "h", kind="redis")
    first.allow(hits_added=100)
    client = redis.Redis.from_url(REDIS)
    [key] = client.keys(f"beamscore:rate:{tmp_path}:h")
    state = json.loads(client.get(key))
    state["log"][0][4:] = [1, "pid:[4026531836]", "another-host"]
    client.set(key, json.dumps(state))
    second = _fake_limiter(t, tmp_path, 100, "h", kind="redis")
    second.STALE_SECONDS = 50.0
    started = t.now
    second.allow(hits_added=100)
    assert 49.0 <= t.now - started <= 51.0
    client.delete(key)


def test_redis_slots_cap_and_release(redis_ok: None) -> None:
    name = uuid.uuid4().hex
    a, b = RedisSlots(REDIS, name, 1), RedisSlots(REDIS, name, 1)
    assert a.acquire() < 2.0  # free: taken at once (a loaded machine answers slowly)
    import threading

    waited: list[float] = []
    t = threading.Thread(target=lambda: waited.append(b.acquire(poll=0.01)))
    t.start()
    time.sleep(0.3)
    assert not waited  # b blocks while a holds the only slot
    a.release()
    t.join(timeout=5)
    assert waited and waited[0] >= 0.25
    b.release()


def test_a_redis_slot_is_renewed_while_used_and_lost_once_expired(redis_ok: None) -> None:
    """Each use renews the slot's TTL (``keep``); a slot that expired while its holder
    sat idle, and that another writer took, is not the holder's any more: the cap holds."""
    import redis

    client = redis.Redis.from_url(REDIS)
    name = uuid.uuid4().hex
    a, b = RedisSlots(REDIS, name, 1, ttl=600), RedisSlots(REDIS, name, 1, ttl=600)
    assert a.try_acquire()
    [key] = client.keys(f"beamscore:slot:*{_digest(name)}*")
    client.expire(key, 5)
    assert a.keep() and client.ttl(key) > 500
    client.delete(key)  # what Redis does when the TTL runs out
    assert b.try_acquire()
    assert not a.keep() and not a.try_acquire()  # b holds the only slot
    assert b.keep()
    b.release()
    assert a.try_acquire()
    a.release()


def test_a_redis_slot_of_a_killed_holder_of_this_host_is_freed_at_once(
        redis_ok: None) -> None:
    """A run killed with SIGKILL leaves its slot in Redis for the TTL (10 minutes): a
    waiter of the same host sees that its holder's process is gone and takes it at
    once; a live holder's slot is waited for as ever."""
    name = uuid.uuid4().hex
    child = os.fork()
    if child == 0:  # takes the only slot and dies holding it
        RedisSlots(REDIS, name, 1, ttl=600).try_acquire()
        os._exit(0)
    os.waitpid(child, 0)
    waiter = RedisSlots(REDIS, name, 1, timeout=5.0)
    started = time.monotonic()
    waiter.acquire()
    assert time.monotonic() - started < 1.0
    other = RedisSlots(REDIS, name, 1, timeout=0.5)
    with pytest.raises(LockWaitTimeout):  # the waiter lives: its slot stays its own
        other.acquire()
    waiter.release()


def test_a_redis_slot_held_idle_is_renewed_and_stays_its_holders(redis_ok: None) -> None:
    """A writer idle for longer than its slot's TTL (a slow model between writes) keeps
    the slot, renewed by its holder's thread: no other writer connects meanwhile, so
    the connection cap holds; released, it is free at once."""
    name = uuid.uuid4().hex
    holder, other = RedisSlots(REDIS, name, 1, ttl=1), RedisSlots(REDIS, name, 1, ttl=1)
    assert holder.try_acquire()
    time.sleep(2.5)
    assert not other.try_acquire()
    holder.release()
    assert other.try_acquire()
    other.release()


def _digest(name: str) -> str:
    import hashlib

    return hashlib.sha256(name.encode()).hexdigest()[:16]


def test_a_redis_slot_wait_is_bounded(redis_ok: None) -> None:
    """A job-wide slot held by a stopped or hung worker is waited for at most the
    bound, then given up with a transient error that says what was waited for."""
    name = uuid.uuid4().hex
    holder = RedisSlots(REDIS, name, 1)
    holder.acquire()
    ticks = iter(range(0, 10_000, 7))  # a clock that moves 7 s a reading
    waiter = RedisSlots(REDIS, name, 1, timeout=60.0, clock=lambda: float(next(ticks)))
    with pytest.raises(LockWaitTimeout) as raised:
        waiter.acquire(poll=0.001)
    assert raised.value.waited >= 60.0 and "in Redis" in str(raised.value)
    holder.release()
    assert waiter.acquire() <= 7.0  # at once: one reading of the clock after the start
    waiter.release()


def test_a_machines_waiters_for_redis_slots_poll_redis_one_at_a_time(
        redis_ok: None, tmp_path: Any) -> None:
    """The sink waits for a job-wide slot in turn (``in_turn`` on a lock file of the
    machine): the second waiter sends Redis nothing while the first polls, then gets
    the slot when the first lets go of it."""
    import threading

    from store.file_locks import in_turn

    name = uuid.uuid4().hex
    holder = RedisSlots(REDIS, name, 1)
    holder.acquire()
    queue = str(tmp_path / "redis-queue.lock")
    tries = {"first": 0, "second": 0}
    waiters = {k: RedisSlots(REDIS, name, 1, timeout=30.0) for k in tries}
    for key, waiter in waiters.items():
        def counted(w: RedisSlots = waiter, k: str = key,
                    original: Any = waiter._try_all) -> bool:
            tries[k] += 1
            return bool(original())
        waiter._try_all = counted  # type: ignore[method-assign]
    got: list[str] = []

    def wait(key: str) -> None:
        in_turn(queue, "a turn", waiters[key].acquire, 30.0)
        got.append(key)

    first = threading.Thread(target=wait, args=("first",))
    first.start()
    deadline = time.monotonic() + 10
    while tries["first"] < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    second = threading.Thread(target=wait, args=("second",))
    second.start()
    time.sleep(0.3)
    assert tries["first"] >= 10 and tries["second"] == 0 and not got
    holder.release()
    first.join(timeout=10)
    assert got == ["first"]
    waiters["first"].release()
    second.join(timeout=10)
    assert got == ["first", "second"] and tries["second"] >= 1
    waiters["second"].release()


def test_a_slot_holder_sees_when_another_process_waits(tmp_path: Any) -> None:
    holder = FileSlots("db", 1, str(tmp_path))
    assert holder.acquire() == 0.0
    assert not holder.contended()
    ctx = mp.get_context("fork")
    log = ctx.Queue()
    waiter = ctx.Process(target=_holder_once, args=("db", 1, str(tmp_path), log))
    waiter.start()
    deadline = time.time() + 10
    while not holder.contended() and time.time() < deadline:
        time.sleep(0.01)
    assert holder.contended()
    holder.release()
    assert log.get(timeout=10) == "in"
    waiter.join(timeout=10)
    assert not holder.contended()


def _holder_once(name: str, n: int, directory: str, log: Any) -> None:
    slots = FileSlots(name, n, directory)
    slots.acquire(poll=0.005)
    log.put("in")
    slots.release()


def test_a_file_slot_asked_for_without_waiting_is_counted_as_wanted_until_taken(
        tmp_path: Any) -> None:
    """``try_acquire`` never waits: finding every slot taken, it tells the holders that
    a worker wants one (so they give theirs up after their next write) until it takes
    one or lets go; asking again does not count it twice, and a blocking ``acquire``
    after it is counted only while it waits."""
    def slots() -> FileSlots:
        return FileSlots("db", 1, str(tmp_path))
    holder, other, third = slots(), slots(), slots()
    assert holder.try_acquire() and holder.try_acquire()  # held: asked again, still held
    assert not holder.contended()
    started = time.monotonic()
    assert not other.try_acquire() and not other.try_acquire()
    assert time.monotonic() - started < 3.0
    assert holder.contended()
    other.release()  # lets go without a slot: wanted by nobody now
    assert not holder.contended()
    assert not third.try_acquire()
    holder.release()
    assert third.try_acquire()  # the slot, and no longer counted as wanting it
    assert not third.contended()
    assert not holder.try_acquire()
    third.release()
    assert holder.acquire() < 1.0  # the one that wanted it takes it, blocking
    assert not holder.contended()
    holder.release()


def test_a_redis_slot_asked_for_without_waiting(redis_ok: None) -> None:
    """Taken without waiting when free; a failed try leaves no count behind."""
    name = uuid.uuid4().hex
    holder, other = RedisSlots(REDIS, name, 1), RedisSlots(REDIS, name, 1)
    assert holder.try_acquire() and holder.try_acquire()
    started = time.monotonic()
    assert not other.try_acquire()
    assert time.monotonic() - started < 3.0 and not holder.contended()
    holder.release()
    assert other.try_acquire()
    assert other.acquire() == 0.0  # held already: no second slot
    assert not holder.try_acquire()
    other.release()
    assert holder.try_acquire()
    holder.release()


def test_a_commit_the_redis_state_cannot_record_leaves_the_write_done(
        redis_ok: None, tmp_path: Any, caplog: pytest.LogCaptureFixture) -> None:
    """Redis away after a write committed: ``done`` cannot record the commit, but the
    write stands (no error to retry it for); the booking counts until it is stale."""
    limiter = RedisRateLimiter(REDIS, f"{tmp_path}:gone", 1000)
    limiter.allow(hits_added=10)

    class _Away:
        def update(self, fn: Any) -> float:
            raise ConnectionError("Redis is away")

    limiter._store = _Away()  # type: ignore[assignment]
    limiter.done()
    assert "could not record a commit (ConnectionError: Redis is away)" in caplog.text


def test_a_user_locking_a_file_the_last_user_just_removed_takes_the_new_one(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run B opens the state's ``users`` file, run A (the last user) ends and removes
    the files, then B's lock comes: B is a user of the new file, so a run C that starts
    and ends meanwhile does not remove the state B writes (its slots, its rate)."""
    import fcntl

    a = StateUser("db", str(tmp_path))
    real, ended = fcntl.flock, []

    def flock(fh: Any, op: int) -> Any:
        if op == fcntl.LOCK_SH and not ended:  # B, between its open and its lock
            ended.append(a.close())
        return real(fh, op)

    monkeypatch.setattr(fcntl, "flock", flock)
    b = StateUser("db", str(tmp_path))
    monkeypatch.undo()
    assert ended == [True]  # A removed the files under B's open
    c = StateUser("db", str(tmp_path))
    assert c.close() is False  # B uses the state: nothing removed
    assert b.close() is True


def test_a_redis_slot_given_up_while_redis_is_away_is_freed_when_it_answers(
        redis_ok: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """A writer whose bundle failed for Redis being away gives its slot up then: the
    slot is deleted as soon as Redis answers again, not left to its TTL (ten minutes
    for which every other writer would wait); a later hold of the same writer is never
    deleted by that late release."""
    from store import limits

    monkeypatch.setattr(limits, "RELEASE_RETRY_SECONDS", 0.05)
    name = uuid.uuid4().hex
    holder = RedisSlots(REDIS, name, 1, ttl=600)
    assert holder.try_acquire()
    real, away = holder._client, [3]  # Redis away for the next three calls

    class _Away:
        def __getattr__(self, attr: str) -> Any:
            def call(*args: Any, **kwargs: Any) -> Any:
                if away[0]:
                    away[0] -= 1
                    raise limits.RedisUnreachable("the Redis at test does not answer")
                return getattr(real, attr)(*args, **kwargs)
            return call

    holder._client = _Away()  # type: ignore[assignment]
    holder.release()
    waiter = RedisSlots(REDIS, name, 1, timeout=5.0)
    assert waiter.acquire(poll=0.01) < 3.0 and not away[0]
    waiter.release()
    assert holder.try_acquire()  # its new hold: the late release took only the old one
    time.sleep(0.3)
    assert holder.keep()
    holder.release()
