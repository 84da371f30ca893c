"""The machine's file locks in front of the database: connection slots and the writer lock.

``FileSlots``: N lock files (``fcntl.flock``), at most N holders across the processes of
one machine (``sink.max_connections``); a process waiting for one holds a shared lock on
a ``waiters`` file, which is how a holder learns that someone waits (``contended``). A
process that asks for a slot without waiting (``try_acquire``) and finds none free
counts as waiting the same way until it takes one or lets go. Waiters queue in the
kernel on a ``queue`` lock (``in_turn``): only the first of them looks at the slot
files, so eight workers waiting cost what one does; the sink queues the machine's
waiters for Redis's slots the same way.

``WriterLock``: one write transaction at a time on this machine (a blocking flock), for
SQLite, which has a single writer anyway: writers queue in the kernel and the next one
starts the moment the last commits, instead of sleeping in SQLite's busy handler.

A file lock dies with its holder (the kernel releases a flock when the process's file
is closed, at exit or on a kill), so a crashed holder frees its slot or the writer lock
at once. A live holder that never lets go (a stopped or hung process) is bounded:
``FileSlots`` and ``WriterLock`` wait at most ``timeout`` seconds (the sink gives them
``sink.lease_seconds``: a run stopped that long has lost its tranches anyway), then
raise ``LockWaitTimeout``, a transient error naming the file and the time waited.
The files live with the other limiter state (``store.limits.state_path``).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from store.limits import LockWaitTimeout, state_path

# Every lock file this module has open. A forked child inherits them, and a lock on its
# copy would stay taken for as long as the child lives, after this process lets go: the
# child closes them (``_forget_in_child``).
_LOCK_FILES: weakref.WeakSet[Any] = weakref.WeakSet()


def _lock_file(path: str) -> Any:
    """``path`` opened to take a lock on (closed by its user)."""
    fh = open(path, "a+")  # noqa: SIM115 - closed by whoever takes the lock, or a child
    _LOCK_FILES.add(fh)
    return fh


def _let_go(fh: Any) -> None:
    """Unlock and close a lock file (one a forked child closed already is let be)."""
    if not fh.closed:
        fcntl.flock(fh, fcntl.LOCK_UN)
        fh.close()


def _unlocked(path: str) -> bool:
    """Whether no process holds a lock on the file at ``path`` now (none is taken)."""
    with _lock_file(path) as probe:
        try:
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(probe, fcntl.LOCK_UN)
        return True


class FileSlots:
    """At most ``n`` holders across the processes of one machine. A process waiting for
    a slot holds a shared lock on a ``waiters`` file, which is how a holder learns that
    someone waits (``contended``)."""

    def __init__(self, identity: str, n: int, directory: str = "",
                 timeout: float = float("inf"), clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self._paths = [state_path(identity, f"slot{i}.lock", directory) for i in range(n)]
        self._waiters = state_path(identity, "waiters.lock", directory)
        self._queue = state_path(identity, "queue.lock", directory)
        self._fh: Any = None
        self._wanting: Any = None  # the waiters file, locked shared, after a try_acquire
        self._timeout, self._clock, self._sleep = timeout, clock, sleep

    def _try_all(self, handles: list[Any] | None = None) -> bool:
        """Take the first free slot; ``handles``: the slot files, open, for a waiter
        that looks again and again (one flock call a slot a look, no open)."""
        for i, path in enumerate(self._paths):
            fh = _lock_file(path) if handles is None else handles[i]
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if handles is None:
                    fh.close()
                continue
            if handles is not None:
                handles[i] = None  # held open while the slot is held
            self._fh = fh
            return True
        return False

    def acquire(self, poll: float = 0.005) -> float:
        """Blocks until a slot is free, for at most ``timeout`` seconds (then
        ``LockWaitTimeout``); returns the seconds waited. Waiters queue in the kernel
        on a ``queue`` lock file: only the first looks at the slots (every ``poll``
        seconds), so waiting costs the same whatever the number of waiters."""
        started = self._clock()
        if self._fh is not None or self._try_all():
            self._stop_wanting()
            return 0.0
        with _lock_file(self._waiters) as waiting:
            fcntl.flock(waiting, fcntl.LOCK_SH)  # released when the file closes
            self._stop_wanting()
            in_turn(self._queue, self._what(), lambda: self._poll(started, poll),
                    self._timeout, self._clock, started, meanwhile=self._try_all)
        return self._clock() - started

    def _poll(self, started: float, poll: float) -> None:
        handles = [_lock_file(path) for path in self._paths]
        try:
            while not self._try_all(handles):
                waited = self._clock() - started
                if waited >= self._timeout:
                    raise LockWaitTimeout(self._what(), waited)
                self._sleep(poll)
        finally:
            for fh in handles:
                if fh is not None:
                    fh.close()

    def _what(self) -> str:
        return f"every connection slot ({len(self._paths)}: {', '.join(self._paths)})"

    def try_acquire(self) -> bool:
        """Take a free slot without waiting; whether one is held. Finding none, this
        process counts as waiting (``contended``) until it takes one or releases."""
        if self._fh is not None or self._try_all():
            self._stop_wanting()
            return True
        if self._wanting is None:
            wanting = _lock_file(self._waiters)  # closed by _stop_wanting
            fcntl.flock(wanting, fcntl.LOCK_SH)
            self._wanting = wanting
        return False

    def _stop_wanting(self) -> None:
        if self._wanting is not None:
            self._wanting.close()  # which releases its lock
            self._wanting = None

    def contended(self) -> bool:
        """Whether a process waits for a slot now."""
        return not _unlocked(self._waiters)

    def keep(self) -> bool:
        """Whether this holder holds its slot: a lock held is held until released."""
        return self._fh is not None

    def release(self) -> None:
        """Let the slot go, and stop counting as waiting for one."""
        self._stop_wanting()
        if self._fh is not None:
            _let_go(self._fh)
            self._fh = None


class _Handoff:
    """A helper thread blocked in ``flock`` on a lock file, and what it hands over."""

    _pending: dict[str, _Handoff] = {}  # by lock file: helpers whose waiter gave up
    _registry = threading.Lock()

    def __init__(self, path: str):
        self.path = path
        self.guard, self.taken = threading.Lock(), threading.Event()
        self.fh: Any = None
        self.error: OSError | None = None
        self.abandoned = self.finished = False

    @classmethod
    def take_over(cls, path: str) -> _Handoff:
        """The pending helper of ``path``, now serving this waiter, or a new one."""
        with cls._registry:
            pending = cls._pending.pop(path, None)
        if pending is not None:
            with pending.guard:
                if not pending.finished:
                    pending.abandoned = False
                    return pending
        handoff = cls(path)
        threading.Thread(target=handoff._take, name=f"beamscore-writer-lock {path}",
                         daemon=True).start()
        return handoff

    def abandon(self) -> None:
        """The waiter gives up (under ``guard``): the helper stays pending."""
        self.abandoned = True
        with self._registry:
            self._pending[self.path] = self

    def _take(self) -> None:
        try:
            fh = _lock_file(self.path)  # handed over, or closed below
            fcntl.flock(fh, fcntl.LOCK_EX)
        except OSError as exc:
            with self.guard:
                self.error, self.finished = exc, True
            self.taken.set()
            return
        with self.guard:
            if not self.abandoned:
                self.fh = fh
                self.taken.set()
                return
            self.finished = True
        fh.close()  # nobody waits for it any more: let the lock go
        with self._registry:
            if self._pending.get(self.path) is self:
                del self._pending[self.path]


class ExclusiveLock:
    """One holder at a time of the lock file at ``path`` across the processes of one
    machine; a waiter blocks in the kernel (in a helper thread) and wakes as soon as the
    holder releases, or gives up after ``timeout`` seconds (``LockWaitTimeout`` naming
    ``what``)."""

    TICK = 0.05  # how often a waiter looks at the clock

    def __init__(self, path: str, what: str, timeout: float = float("inf"),
                 clock: Callable[[], float] = time.monotonic):
        self._path, self._what = path, what
        self._fh: Any = None
        self._timeout, self._clock = timeout, clock

    def acquire(self, started: float | None = None) -> float:
        """Blocks until held, for at most ``timeout`` seconds since ``started`` (default:
        now); returns the seconds waited."""
        started = self._clock() if started is None else started
        self.take(started)
        return self._clock() - started

    def take(self, started: float, instead: Callable[[], bool] | None = None) -> bool:
        """Blocks until held (True), for at most ``timeout`` seconds since ``started``;
        ``instead``: tried every ``TICK`` meanwhile, and the wait given up (False, the
        lock not held) as soon as it answers True."""
        fh = _lock_file(self._path)  # held open while the lock is held
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            fh = self._wait(started, instead)
        self._fh = fh
        return fh is not None

    def _wait(self, started: float, instead: Callable[[], bool] | None = None) -> Any:
        """The lock's file, once a helper thread blocked in ``flock`` took it (None: the
        wait was given up for ``instead``). A waiter that gives up leaves its helper
        pending for the next waiter of this process to take over (one helper per lock
        file, however many waits end so); a helper that takes the lock while none waits
        closes it at once (which releases it)."""
        handoff = _Handoff.take_over(self._path)
        while not handoff.taken.wait(self.TICK):
            waited = self._clock() - started
            with handoff.guard:
                if handoff.fh is not None:
                    break
                if waited >= self._timeout:
                    handoff.abandon()
                    raise LockWaitTimeout(self._what, waited)
                if instead is not None and instead():
                    handoff.abandon()
                    return None
        if handoff.error is not None:
            raise handoff.error
        return handoff.fh

    def free(self) -> bool:
        """Whether no process holds the lock at this moment (it may be taken the next)."""
        return self._fh is None and _unlocked(self._path)

    def release(self) -> None:
        if self._fh is not None:
            _let_go(self._fh)
            self._fh = None


def in_turn(path: str, what: str, wait: Callable[[], Any], timeout: float = float("inf"),
            clock: Callable[[], float] = time.monotonic, started: float | None = None,
            meanwhile: Callable[[], bool] | None = None) -> None:
    """``wait()`` (a wait that polls often) in one process of the machine at a time: the
    others queue in the kernel on the lock file at ``path`` (for at most ``timeout``
    seconds since ``started``, then ``LockWaitTimeout`` naming ``what``), so however
    many wait, one polls often. A queued waiter tries ``meanwhile()`` (the same thing,
    once) every ``ExclusiveLock.TICK`` and is done when it succeeds: a waiter at the head
    that is stopped or hung delays the others by a tick, not for good."""
    queue = ExclusiveLock(path, what, timeout, clock)
    if not queue.take(clock() if started is None else started, meanwhile):
        return
    try:
        wait()
    finally:
        queue.release()


def _forget_in_child() -> None:
    """In a forked child: close the lock files it inherited (its copies would keep a
    lock taken after this process lets go), and forget the helper threads it did not
    inherit (none may be waited for; the registry's lock may be held by one)."""
    for fh in list(_LOCK_FILES):
        with contextlib.suppress(OSError, ValueError):
            fh.close()
    _Handoff._pending = {}
    _Handoff._registry = threading.Lock()


os.register_at_fork(after_in_child=_forget_in_child)


class WriterLock(ExclusiveLock):
    """The machine's one write transaction at a time (``writer.lock``)."""

    def __init__(self, identity: str, directory: str = "", timeout: float = float("inf"),
                 clock: Callable[[], float] = time.monotonic):
        path = state_path(identity, "writer.lock", directory)
        super().__init__(path, f"the writer lock {path}", timeout, clock)
