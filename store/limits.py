"""Database ingestion limits: a global rows/s budget and a hard connection cap.

Rate (``sink.max_rows_per_second``), as limiters with the interface of Beam's
``RateLimiter``: ``allow(hits_added=n)`` blocks until ``n`` rows may be written,
``done()`` reports the write committed, ``last_wait`` is the time the last call waited.
One algorithm (``SlidingWindowLimiter``: an even schedule plus a sliding-window log of
in-flight and committed writes) over two stores of its state:

- ``MachineRateLimiter``: a flock-guarded state file shared by every writer process of
  the machine. With ``--workers N`` on one machine the limit is global as such; on
  Dataflow each worker VM gets R / max_num_workers.
- ``RedisRateLimiter``: one Redis key shared by every writer of the job, for
  autoscaled Dataflow jobs whose VM count varies.

Connections (``sink.max_connections``), as slots a writer must hold while its
connection is open:

- ``FileSlots`` (``store.file_locks``): N lock files (``fcntl.flock``): a cap across all
  processes of one machine.
- ``RedisSlots``: N keys with a TTL in Redis: a cap across machines. The holder renews
  its key's TTL at each use (``keep``); a key that expired while its holder sat idle
  is no longer that holder's, which takes a slot again before its next call.

Both tell a holder whether another writer is waiting for a slot (``contended``): the
sink then gives its slot up after each write instead of holding it for its bundle, so
N slots serve any number of writers without a convoy. ``store.file_locks`` also holds
``WriterLock``, the machine's one SQLite writer at a time.

A machine's state files live in one directory (``sink.state_dir``, default
``<temp dir>/beamscore``), named by a hash of the database's identity (host, port and
database, or the SQLite file's absolute path), so every run against the same database
shares them. Each launcher holds ``StateUser`` for its run; the last one to finish
removes the files.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from store.backends.base import DatabaseUnreachable, TransientDatabaseError, has_userinfo_password

_LOG = logging.getLogger(__name__)


def state_path(identity: str, suffix: str, directory: str = "") -> str:
    """``<directory>/<hash of identity>.<suffix>``; the directory is created."""
    directory = directory or os.path.join(tempfile.gettempdir(), "beamscore")
    os.makedirs(directory, exist_ok=True)
    return os.path.join(directory, f"{hashlib.sha256(identity.encode()).hexdigest()[:16]}"
                                   f".{suffix}")


class StateUser:
    """Marks the state files of ``identity`` in use while held (a shared flock);
    ``close`` releases it and removes the files if no other holder is left. A user
    whose lock came on a file the last one had just removed takes the new one."""

    def __init__(self, identity: str, directory: str = ""):
        self._users = state_path(identity, "users", directory)
        while True:
            self._fh: Any = open(self._users, "a+")  # noqa: SIM115 - held until close()
            fcntl.flock(self._fh, fcntl.LOCK_SH)
            if self._is_the_file():
                return
            # The last user removed the files between the open and the lock: the file
            # held is gone, and the state this run will use is a new one.
            self._fh.close()

    def _is_the_file(self) -> bool:
        """Whether the file held is still the one at its path (not removed, not replaced)."""
        held = os.fstat(self._fh.fileno())
        try:
            current = os.stat(self._users)
        except FileNotFoundError:
            return False
        return held.st_nlink > 0 and (held.st_dev, held.st_ino) == (current.st_dev,
                                                                   current.st_ino)

    def close(self) -> bool:
        """Release; True if this was the last user and the files were removed."""
        if self._fh is None:
            return False
        self._fh.close()
        self._fh = None
        with open(self._users, "a+") as probe:
            try:
                fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            prefix = self._users[: -len("users")]
            directory = os.path.dirname(self._users)
            for name in os.listdir(directory):
                path = os.path.join(directory, name)
                if path.startswith(prefix) and path != self._users:
                    with contextlib.suppress(FileNotFoundError):
                        os.remove(path)
            os.remove(self._users)
        return True


class SlidingWindowLimiter:
    """``rate`` rows per any 1-second window, shared by every writer whose limiter reads
    and writes the same state (``store``: a flock-guarded file or a Redis key).

    ``allow(n)`` waits until its turn in an even schedule (n/rate seconds per write,
    so there is no start-up burst) and until the rows committed in the last second,
    plus the rows of writes still in flight, plus ``n`` fit in ``rate``; it then
    records the write as in flight. ``done()`` records its commit time. In-flight
    writes count as committing now, and commits are recorded after they happen, so the
    log never undercounts: every 1-second window of real commits holds at most
    ``rate`` rows (a single write larger than ``rate`` is let through alone), however
    long a write waits between its booking and its commit.
    An in-flight write names its host and process: a writer of this host killed between
    booking and commit holds no budget once its process is gone; one of another host
    (Redis) is judged by age, ``STALE_SECONDS``. A clock stepped back (an NTP
    correction, a restored VM) leaves times in the state that are later than now: they
    count as now, and the schedule is at most one second and one write ahead of now,
    so writers wait at most that, not the size of the step.
    """

    STALE_SECONDS = 300.0  # an in-flight entry this old belongs to a dead writer

    def __init__(self, store: _FileState | _RedisState, rate: float,
                 clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep):
        self._store = store
        self.rate = rate
        self.last_wait = 0.0
        self._pending: str | None = None
        self._clock, self._sleep = clock, sleep

    def _update(self, fn: Callable[[dict[str, Any], float], float]) -> float:
        def pruned(state: dict[str, Any], now: float) -> float:
            # Keep commits of the last second and in-flight writes of live writers
            # (one that crashed between booking and commit is gone at once, by its
            # process, else after STALE_SECONDS).
            log = [e for e in state["log"] if (e[3] and e[2] > now - 1.0)
                   or (not e[3] and e[2] > now - self.STALE_SECONDS and _alive(e[4:]))]
            for e in log:  # a time later than now: the clock stepped back since
                e[2] = min(e[2], now)
            largest = max((e[1] for e in log), default=0)
            state["log"] = log
            state["next"] = min(state["next"], now + 1.0 + largest / self.rate)
            return fn(state, now)

        return self._store.update(pruned)

    def allow(self, hits_added: int = 1, **_: Any) -> bool:
        self.last_wait = 0.0
        if self.rate <= 0:
            return True
        entry_id = uuid.uuid4().hex
        started = self._clock()

        def try_book(state: dict[str, Any], now: float) -> float:
            log = state["log"]
            if now < state["next"]:  # pacing: spread writes evenly, no start-up burst
                return state["next"] - now
            used = sum(e[1] for e in log)
            if used + hits_added <= self.rate or not log:
                log.append([entry_id, hits_added, now, False, os.getpid(), _PID_NAMESPACE,
                            _HOST])
                state["next"] = max(now, state["next"]) + hits_added / self.rate
                return 0.0
            # Earliest moment enough committed rows leave the window; poll if in flight.
            excess = used + hits_added - self.rate
            for e in sorted((e for e in log if e[3]), key=lambda e: e[2]):
                excess -= e[1]
                if excess <= 0:
                    return max(0.001, e[2] + 1.0 - now)
            return 0.01

        while True:
            wait = self._update(try_book)
            if wait == 0.0:
                break
            self._sleep(wait)
        self._pending = entry_id
        self.last_wait = self._clock() - started
        return True

    def done(self) -> None:
        """The write booked by the last ``allow`` has committed (or failed). A state that
        cannot be reached now (Redis away) is not an error of the write, which is done:
        its booking then counts until ``STALE_SECONDS``, as a dead writer's would."""
        if self._pending is None:
            return
        entry_id, self._pending = self._pending, None

        def commit(state: dict[str, Any], now: float) -> float:
            for e in state["log"]:
                if e[0] == entry_id:
                    e[2], e[3] = now, True
            return 0.0

        try:
            self._update(commit)
        except Exception as exc:  # noqa: BLE001 - a Redis error; the write stands
            _LOG.warning("rate limiter: could not record a commit (%s: %s); its booking "
                         "counts until it is %.0f s old", type(exc).__name__, exc,
                         self.STALE_SECONDS)


_EMPTY = '{"next": 0.0, "log": []}'


class _FileState:
    """The limiter's state in a file, read and written under an exclusive flock."""

    def __init__(self, path: str, clock: Callable[[], float]):
        self._path, self._clock = path, clock

    def update(self, fn: Callable[[dict[str, Any], float], float]) -> float:
        with open(self._path, "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                fh.seek(0)
                state: dict[str, Any] = json.loads(fh.read() or _EMPTY)
                result = fn(state, self._clock())
                fh.seek(0)
                fh.truncate()
                fh.write(json.dumps(state))
                fh.flush()
                return result
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)


def redis_url_problem(url: str) -> str | None:
    """Why ``url`` cannot be the sink's Redis URL, read as redis-py reads it
    (``redis.connection.parse_url``, without connecting): it holds a password
    (``user:secret@`` or a ``password`` query parameter, which redis-py would send: a
    secret in the config) or is not a URL redis-py reads (a port that is no number); None
    when it can. The reason never quotes the URL."""
    from urllib.parse import parse_qsl

    from redis.connection import parse_url

    query = url.partition("?")[2].partition("#")[0]
    if has_userinfo_password(url) or any(
            name.lower() == "password" for name, _ in parse_qsl(query, keep_blank_values=True)):
        return "must not contain a password (redis://host:port/db)"
    try:
        parse_url(url)
    except ValueError as exc:  # its quoted parts are the URL's: not shown
        why = re.sub(r"'[^']*'|\"[^\"]*\"", "'...'", str(exc))
        return f"is not a Redis URL redis-py reads (redis://host:port/db): {why}"
    return None


class _RedisState:
    """The limiter's state in one Redis key, updated in an optimistic transaction
    (WATCH/MULTI, retried when another writer changed it meanwhile). Time is the Redis
    server's (``TIME``), one clock for writers on every machine, unless ``clock`` is
    given. The key expires when no writer has touched it for ``ttl_ms``."""

    def __init__(self, redis_url: str, key: str, ttl_ms: int,
                 clock: Callable[[], float] | None = None):
        self._url, self._key, self._ttl_ms, self._clock = redis_url, key, ttl_ms, clock
        self._client: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_client"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._client = None

    def update(self, fn: Callable[[dict[str, Any], float], float]) -> float:
        if self._client is None:
            self._client = _Redis(self._url)

        def transaction(pipe: Any) -> float:
            text = pipe.get(self._key)
            if self._clock is not None:
                now = self._clock()
            else:
                seconds, micros = pipe.time()
                now = seconds + micros / 1e6
            state: dict[str, Any] = json.loads(text or _EMPTY)
            result = fn(state, now)
            pipe.multi()
            pipe.set(self._key, json.dumps(state), px=self._ttl_ms)
            return result

        return float(self._client.transaction(transaction, self._key,
                                              value_from_callable=True))


class RedisUnreachable(DatabaseUnreachable):
    """The Redis that keeps the job's rate limit or connection slots does not answer:
    retried like a database that is away (``sink.connect_timeout_seconds``), then exit
    75."""


class _Redis:
    """A Redis client whose calls raise ``RedisUnreachable`` for a connection refused,
    lost or timed out (redis-py's own errors otherwise)."""

    def __init__(self, redis_url: str):
        import redis

        self._client = redis.Redis.from_url(redis_url)
        kwargs = self._client.connection_pool.connection_kwargs
        self._where = f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}"
        self._errors = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return method(*args, **kwargs)
            except self._errors as exc:
                raise RedisUnreachable(f"the Redis at {self._where} (sink.redis_url) does "
                                       f"not answer: {type(exc).__name__}: {exc}") from exc
        return call


class MachineRateLimiter(SlidingWindowLimiter):
    """The budget shared by all processes of this machine writing to ``identity``: the
    window's state in a flock-guarded file (``state_path``)."""

    def __init__(self, identity: str, rate: float, directory: str = "",
                 clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep):
        super().__init__(_FileState(state_path(identity, "rate.json", directory), clock),
                         rate, clock, sleep)


class RedisRateLimiter(SlidingWindowLimiter):
    """A job-wide budget shared by every writer of every machine: the window's state in
    Redis, on the Redis server's clock (``clock``: tests)."""

    def __init__(self, redis_url: str, key: str, rate: float,
                 clock: Callable[[], float] | None = None,
                 sleep: Callable[[float], None] = time.sleep):
        store = _RedisState(redis_url, f"beamscore:rate:{key}",
                            int((self.STALE_SECONDS + 1) * 1000), clock)
        super().__init__(store, rate, clock or time.time, sleep)


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


_PID_NAMESPACE = _pid_namespace()  # a pid means a process only within its namespace
_HOST = socket.gethostname()


def _alive(owner: list[Any]) -> bool:
    """Whether the writer of a log entry may still be running: its process exists, when
    the entry names one of this host and pid namespace (an entry of another host, of a
    state directory shared with another namespace, or without an owner, is judged by
    age alone)."""
    if (len(owner) != 3 or not owner[1] or owner[1] != _PID_NAMESPACE
            or owner[2] != _HOST):
        return True
    try:
        os.kill(int(owner[0]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


class LockWaitTimeout(TransientDatabaseError):
    """A connection slot or the machine's writer lock stayed taken for the whole bound;
    ``waited``: the seconds waited."""

    def __init__(self, what: str, waited: float):
        super().__init__(f"{what} stayed taken by other writers for {waited:.1f}s (the "
                         "bound, sink.lease_seconds): a holder that is stopped or hung; "
                         "given up, to be retried")
        self.waited = waited


RELEASE_RETRY_SECONDS = 0.25  # the first retry of a release Redis did not take


class RedisSlots:
    """At most ``n`` holders job-wide; a slot expires after ``ttl`` s if its holder dies.
    A slot names its holder (process, pid namespace, host): a waiter frees at once the
    slot of a holder of its own host whose process is gone (a run killed with SIGKILL),
    as the rate log's in-flight writes are; another host's is freed by its TTL. A slot
    held is renewed every third of its TTL by a thread of its holder, idle or not, so a
    writer that sits idle between writes (a slow model) keeps it, and its connection
    stays within the cap. A slot given up while Redis is away is deleted by a thread of
    its holder as soon as Redis answers again (not left to its TTL: the other writers
    would wait that long for it). Each hold has a token of its own, so that a late
    deletion never takes a later hold. Waiters count themselves in a key that expires
    with them (``contended``); a wait gives up after ``timeout`` seconds
    (``LockWaitTimeout``)."""

    def __init__(self, redis_url: str, name: str, n: int, ttl: int = 600,
                 timeout: float = float("inf"), clock: Callable[[], float] = time.monotonic):
        self._timeout, self._clock = timeout, clock
        self._client = _Redis(redis_url)
        digest = hashlib.sha256(name.encode()).hexdigest()[:16]
        self._keys = [f"beamscore:slot:{digest}:{i}" for i in range(n)]
        self._waiting = f"beamscore:slotwait:{digest}"
        self._ttl = ttl
        self._token = ""  # the current hold's
        self._held: str | None = None

    def _try_all(self) -> bool:
        token = json.dumps([uuid.uuid4().hex, os.getpid(), _PID_NAMESPACE, _HOST])
        for key in self._keys:
            if self._client.set(key, token, nx=True, ex=self._ttl):
                self._held, self._token = key, token
                self._renew_while_held(key)
                return True
        return False

    def _renew_while_held(self, key: str) -> None:
        """Renew ``key``'s TTL every third of it while this holder holds it (a daemon
        thread: a dead holder's slot still expires)."""
        def renew() -> None:
            while self._held == key and not stop.wait(self._ttl / 3):
                with contextlib.suppress(Exception):  # Redis away: the next use says so
                    if self._held == key:
                        self.keep()
        stop = threading.Event()
        self._stop_renewing = stop
        threading.Thread(target=renew, name="beamscore-slot", daemon=True).start()

    def acquire(self, poll: float = 0.01, started: float | None = None) -> float:
        """Blocks until a slot is free, for at most ``timeout`` seconds since ``started``
        (default: now; then ``LockWaitTimeout``); returns the seconds waited."""
        started = self._clock() if started is None else started
        if self._held is not None:
            return 0.0
        self._free_dead_holders()
        while not self._try_all():
            # Counted as waiting for at most 30 s at a time, before the count expires.
            self._client.incr(self._waiting)
            self._client.expire(self._waiting, 60)
            try:
                deadline, look_again = self._clock() + 30, self._clock() + 1.0
                while self._clock() < deadline and not self._try_all():
                    if self._clock() >= look_again:
                        self._free_dead_holders()
                        look_again = self._clock() + 1.0
                    if self._clock() - started >= self._timeout:
                        raise LockWaitTimeout(f"every connection slot of the job "
                                              f"({len(self._keys)}, in Redis)",
                                              self._clock() - started)
                    time.sleep(poll)
            finally:
                self._client.decr(self._waiting)
            if self._held is not None:
                break
        return self._clock() - started

    def _free_dead_holders(self) -> None:
        """Delete the slots whose holder is a process of this host that is gone (only
        if the slot still names it)."""
        for key, value in zip(self._keys, self._client.mget(self._keys)):
            if value is None:
                continue
            try:
                owner = json.loads(value)[1:]
            except (ValueError, TypeError, IndexError):  # another version's token
                continue
            if not _alive(owner):
                self._delete(key, value)

    def keep(self) -> bool:
        """Whether this holder still holds its slot, its expiry renewed (``ttl`` seconds
        from now) if so; a slot that expired (held idle for longer than ``ttl``, and
        perhaps taken by another writer since) is no longer held."""
        if self._held is None:
            return False
        renewed = self._client.eval(
            "if redis.call('GET', KEYS[1]) == ARGV[1] then "
            "return redis.call('EXPIRE', KEYS[1], ARGV[2]) end return 0",
            1, self._held, self._token, self._ttl)
        if not renewed:
            self._held = None
        return bool(renewed)

    def try_acquire(self) -> bool:
        """Take a free slot without waiting; whether one is held. Unlike a file slot's,
        a failed try is not counted as waiting: a count in Redis could outlive a worker
        that never comes back to take it off (only ``acquire`` counts, for 30 s at a
        time). With Redis away, none is taken (``acquire`` then waits it out)."""
        try:
            return self._held is not None or self._try_all()
        except RedisUnreachable:
            return False

    def contended(self) -> bool:
        try:
            return int(self._client.get(self._waiting) or 0) > 0
        except RedisUnreachable:
            return False

    def release(self) -> None:
        """Give the slot up; with Redis away, a thread deletes it once Redis answers
        again (or its TTL has run out)."""
        if self._held is not None:
            held, self._held = self._held, None
            self._stop_renewing.set()
            try:
                self._delete(held, self._token)
            except RedisUnreachable as exc:
                _LOG.warning("%s; the slot is given up once Redis answers again", exc)
                self._delete_later(held, self._token)

    def _delete(self, key: str, token: str) -> None:
        """Delete ``key`` if it still holds ``token`` (a slot that expired, then taken,
        is another's)."""
        self._client.eval("if redis.call('GET', KEYS[1]) == ARGV[1] then "
                          "return redis.call('DEL', KEYS[1]) end return 0", 1, key, token)

    def _delete_later(self, key: str, token: str) -> None:
        """``_delete`` retried by a daemon thread, with backoff, until Redis answers or
        the slot's TTL has run out."""
        def retry() -> None:
            until, delay = time.monotonic() + self._ttl, RELEASE_RETRY_SECONDS
            while time.monotonic() < until:
                time.sleep(delay)
                try:
                    self._delete(key, token)
                    return
                except RedisUnreachable:
                    delay = min(delay * 2, 10.0)
                except Exception as exc:  # noqa: BLE001 - a daemon thread: say it, stop
                    _LOG.warning("could not give up the slot %s: %s", key, exc)
                    return
        threading.Thread(target=retry, name="beamscore-slot-release", daemon=True).start()
