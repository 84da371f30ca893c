"""Local SDK workers forked from a warm "zygote" instead of spawned cold.

Beam's FnApiRunner in ``multi_processing`` mode starts each SDK worker as a fresh
interpreter that imports Beam, pandas, pyarrow and scikit-learn again: seconds of CPU
per worker, the main fixed cost of a local run. ``ForkServer`` starts one
single-threaded zygote process at the start of a run that pre-imports the modules a
worker needs and listens on a Unix socket. FnApiRunner is given the fork server's
environment (``engine.environment``): for each worker the launcher sends the worker's
endpoints (the ``WORKER_ENV`` variables Beam's workers read) to the zygote, which forks
a ready worker running Beam's own ``sdk_worker_main`` and answers with its pid, then
with its exit code once it ends. Workers are ordinary Beam SDK harnesses: only their
start-up changes.

Fork safety: gRPC cannot be used in a child forked after gRPC has run in the parent.
The zygote never touches gRPC and runs no Python threads (a select loop, woken by
SIGCHLD through a wakeup fd, that reaps children without blocking; native library
threads, e.g. pyarrow's allocator, do not take part in the fork). With
``start_method="auto"`` it is forked from the launcher itself (imports done, so it is
ready at once) the first time a fork server starts in a process, before the run starts
gRPC; after any fork server started in the process (tests, library callers: gRPC has
run here since) it is spawned as a fresh interpreter instead,
whose imports overlap the launcher's planning. It exits when the launcher goes away
and kills its workers when stopped. Workers of a run are started together (each
worker's fork is one accept and one ``fork``) and, with ``engine.teardown``, stopped
together; with ``engine.bundles`` a small stage goes only to the workers that have
elements of it; with ``engine.construction`` a worker inspects each DoFn method once,
not once per stage, and with ``engine.pickles`` it does not compress the specs of its
operations. The zygote, and so every worker, runs as batch work for the scheduler
(``engine.scheduling``).

``preload(fn)`` runs a (pickled) callable once in the zygote before it forks the
run's workers, which inherit what it made: the run's model, loaded and verified once
per machine instead of once per worker, its memory shared by the workers until they
write to it. The zygote reads its socket's connections in order and the callables are
sent as soon as it serves, before the runner starts any worker, so every worker is
forked after them. A callable that fails there changes nothing: each worker then does
the work itself, and reports its error as it would have.
"""

from __future__ import annotations

import base64
import contextlib
import importlib
import json
import logging
import os
import pickle
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence

from engine.bundles import skip_empty_bundles
from engine.construction import memoize_construction
from engine.environment import WORKER_ENV, ForkServerEnvironment
from engine.pickles import plain_operation_pickles
from engine.scheduling import batch_policy
from engine.startup import start_up
from engine.teardown import parallel_close_all

START_METHODS = ("auto", "fork", "spawn")
# What an SDK worker imports, beyond a run's preloads: Beam's worker entry module, and
# (where this gRPC has them: private names, imported only if found) the two gRPC
# modules its ``create_harness`` imports on first use (``grpc.channel_ready_future``,
# ``grpc.intercept_channel``), which each worker would otherwise import for itself.
# Imports only: gRPC does not run in the zygote.
SDK_WORKER_MODULES = ("apache_beam.runners.worker.sdk_worker_main",)
SDK_WORKER_OPTIONAL_MODULES = ("grpc._utilities", "grpc._interceptor")
PRELOAD_KEY = "preload"  # a connection's message that carries a callable, not a worker's env

_LOG = logging.getLogger(__name__)

# gRPC cannot be used in a child forked after gRPC has run in the parent.
_GRPC_USED = False


class ForkServer:
    """Start with ``start()``, hand ``environment()`` to FnApiRunner, ``stop()`` after."""

    def __init__(self, preload: Sequence[str], ready_timeout: float = 120.0,
                 start_method: str = "auto"):
        if start_method not in START_METHODS:
            raise ValueError(f"start_method must be one of {START_METHODS}")
        self._preload = tuple(preload)
        self._ready_timeout = ready_timeout
        self._start_method = start_method
        self._proc: subprocess.Popen[bytes] | None = None
        self._pid = 0
        self._ready_fd = -1
        self._ready = False
        self._dir = ""
        self._preloads: list[bytes] = []  # pickled callables not yet sent to the zygote

    @property
    def socket_path(self) -> str:
        return os.path.join(self._dir, "zygote.sock")

    @property
    def pid(self) -> int:
        return self._pid

    def start(self) -> None:
        """Start the zygote and return at once; ``wait_ready`` blocks until it serves."""
        global _GRPC_USED
        parallel_close_all()  # the run's workers are stopped together, not in a row
        skip_empty_bundles()  # a small stage costs no round trip per idle worker
        self._dir = tempfile.mkdtemp(prefix="beamscore-fork-")
        ready_r, ready_w = os.pipe()
        self._ready_fd = ready_r
        method = self._start_method
        if method == "auto":
            method = "spawn" if _GRPC_USED else "fork"
        _GRPC_USED = True  # whatever the method, the run about to start brings up gRPC here
        if method == "fork":
            launcher = os.getpid()
            pid = os.fork()
            if pid == 0:  # the zygote
                os.close(ready_r)
                code = 0
                try:
                    _Zygote(self.socket_path, launcher).serve(self._preload, ready_w)
                except BaseException:  # noqa: BLE001 - the launcher sees no ready byte
                    code = 1
                os._exit(code)
            self._pid = pid
        else:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "engine.forkserver", self.socket_path,
                 str(ready_w), ",".join(self._preload)],
                pass_fds=(ready_w,), stdin=subprocess.DEVNULL,
            )
            self._pid = self._proc.pid
        os.close(ready_w)

    def wait_ready(self) -> None:
        """Block until the zygote serves (at once if it was seen serving before); a
        zygote that fails to start, or takes longer than ``ready_timeout``, is stopped
        and reported as a RuntimeError."""
        if self._ready:
            return
        ready, _, _ = select.select([self._ready_fd], [], [], self._ready_timeout)
        ok = bool(ready) and os.read(self._ready_fd, 1) == b"1"
        os.close(self._ready_fd)
        self._ready_fd = -1
        if not ok:
            self.stop()
            raise RuntimeError("the local worker fork server did not start; "
                               "set local_engine: spawn to use Beam's multi_processing")
        self._ready = True
        self._send_preloads()

    def preload(self, fn: Callable[[], object]) -> None:
        """Run ``fn`` (pickled) once in the zygote before it forks this run's workers:
        sent as soon as the zygote serves. Call it before the pipeline runs; one that
        cannot be pickled is skipped with a warning (the workers do the work)."""
        try:
            self._preloads.append(pickle.dumps(fn))
        except Exception as exc:  # noqa: BLE001 - pickling can raise anything
            _LOG.warning("cannot hand the fork server %r: %s", fn, exc)
            return
        if self._ready:
            self._send_preloads()

    def _send_preloads(self) -> None:
        while self._preloads:
            payload = base64.b64encode(self._preloads.pop(0)).decode()
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
                    conn.connect(self.socket_path)
                    conn.sendall(json.dumps({PRELOAD_KEY: payload}).encode() + b"\n")
            except OSError as exc:  # the workers load for themselves
                _LOG.warning("could not hand the fork server a preload: %s", exc)

    def environment(self) -> ForkServerEnvironment:
        return ForkServerEnvironment.of(self.socket_path)

    def stop(self) -> None:
        if self._ready_fd >= 0:  # stopped before wait_ready (no chunks, a build error)
            os.close(self._ready_fd)
            self._ready_fd = -1
        if self._pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._pid, signal.SIGTERM)
            if self._proc is not None:
                self._proc.wait()
            else:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(self._pid, 0)
            self._pid, self._proc = 0, None
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = ""
        self._ready = False
        self._preloads.clear()


class _Zygote:
    """Pre-imports, then forks one SDK worker per connection asking for one."""

    def __init__(self, path: str, launcher: int):
        self._path = path
        self._launcher = launcher
        self._children: dict[int, socket.socket] = {}  # worker pid -> its request's connection

    def serve(self, preload: Sequence[str], ready_fd: int) -> None:
        logging.getLogger().handlers.clear()  # workers log through Beam's logging service
        batch_policy()  # the zygote's, so every worker's (engine.scheduling)
        memoize_construction()  # every worker's operations built without re-inspecting
        plain_operation_pickles()  # ... and without compressing their specs
        signal.signal(signal.SIGTERM, self._terminate)
        signal.signal(signal.SIGINT, self._terminate)
        # A worker's exit wakes the loop at once (its handler in the launcher, and
        # FnApiRunner's stop_worker behind it, wait for the exit code): SIGCHLD writes
        # to this pipe.
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        # The pre-imported objects are frozen: the collector's passes would write to
        # every tracked object's header, copying the zygote's pages into each worker.
        with start_up():
            for name in (*preload, *SDK_WORKER_MODULES):
                importlib.import_module(name)
            for name in SDK_WORKER_OPTIONAL_MODULES:
                with contextlib.suppress(ImportError):
                    importlib.import_module(name)
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(self._path)
        self._server.listen(64)
        os.write(ready_fd, b"1")
        os.close(ready_fd)
        self._loop()

    def _loop(self) -> None:
        while True:
            if os.getppid() != self._launcher:  # the launcher is gone
                self._terminate()
            readable, _, _ = select.select([self._server.fileno(), self._wake_r], [], [], 0.5)
            if self._wake_r in readable:
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wake_r, 4096)
            if self._server.fileno() in readable:
                conn, _ = self._server.accept()
                try:
                    env = json.loads(_read_line(conn))
                except ValueError:  # not a request: nothing to serve
                    conn.close()
                    continue
                if PRELOAD_KEY in env:
                    conn.close()
                    with start_up():  # what it makes is frozen, as the imports are
                        _run_preload(env[PRELOAD_KEY])
                    continue
                pid = os.fork()
                if pid == 0:
                    self._become_worker(conn, env)
                self._children[pid] = conn
                # The launcher knows from now on that a worker runs (engine.environment).
                with contextlib.suppress(OSError):
                    conn.sendall(struct.pack("<i", pid))
            self._reap()

    def _become_worker(self, conn: socket.socket, env: dict[str, str]) -> None:
        """In the forked child: drop the zygote's state, run Beam's SDK worker, exit."""
        self._server.close()
        # Its own connection and its siblings' are the zygote's business: a worker
        # holding them would keep the launcher from seeing them end.
        conn.close()
        for other in self._children.values():
            other.close()
        self._children.clear()
        signal.set_wakeup_fd(-1)
        os.close(self._wake_r)
        os.close(self._wake_w)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        os.environ.update({k: v for k, v in env.items() if k in WORKER_ENV})
        from apache_beam.runners.worker import sdk_worker_main

        code = 0
        try:
            sdk_worker_main.main(["sdk_worker_main"])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:  # noqa: BLE001 - reported as the exit code
            code = 1
        os._exit(code)

    def _reap(self) -> None:
        """Reap finished workers without blocking; send each one's exit code on the
        connection that asked for it."""
        while self._children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            conn = self._children.pop(pid, None)  # None: a child a library started
            if conn is not None:
                with contextlib.suppress(OSError):
                    conn.sendall(struct.pack("<i", os.waitstatus_to_exitcode(status)))
                conn.close()

    def _terminate(self, *_: object) -> None:
        for child in self._children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
        os._exit(0)


def _run_preload(payload: str) -> None:
    """In the zygote: call a launcher's preload. Whatever it raises, the zygote serves
    on (the workers then do the work themselves) and says so on its standard error."""
    try:
        pickle.loads(base64.b64decode(payload))()
    except BaseException as exc:  # noqa: BLE001 - SystemExit too: the zygote must serve
        with contextlib.suppress(Exception):
            print(f"beamscore fork server: a preload failed, workers do it themselves: "
                  f"{type(exc).__name__}: {exc}", file=sys.stderr, flush=True)


def _read_line(conn: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


if __name__ == "__main__":
    _Zygote(sys.argv[1], os.getppid()).serve(
        [m for m in sys.argv[3].split(",") if m], int(sys.argv[2]))
