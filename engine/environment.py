"""The fork server's Beam environment: FnApiRunner asks the zygote for each worker itself.

``ForkServerEnvironment`` (URN ``beamscore:env:fork_server:v1``; its payload is the fork
server's socket path) is the environment of a run on ``engine.forkserver``. For each
worker FnApiRunner makes a ``ForkServerWorkerHandler``, Beam's gRPC worker handler
whose ``start_worker`` hands the worker's endpoints to the zygote over its socket from a
thread of the launcher: the zygote forks a pre-imported worker and answers with its pid,
then, once the worker has exited, with its exit code, which ``stop_worker`` waits for.
Nothing but the worker itself is started per worker: Beam's subprocess environment
would start a shell and a client command for each (a ``python`` interpreter: 40-50 ms of
CPU a worker), and a gRPC logging server each; here the workers of the process log to
one logging service, whose lines are Beam's local runner's (``Worker: <entry>``, on the
``local_job_service`` logger that ``pipelines.orchestration.logs`` filters).

A fork server that cannot be reached, or that goes away before it forked the worker,
does not stop the run: the worker then starts as Beam's own ``sdk_worker_main`` in a
fresh interpreter (the ``spawn`` engine's worker, which imports everything again) with
the same endpoints, and a warning says why. A worker that exits with an error, or whose
fork server goes away while it runs, is logged as an error, as Beam's subprocess
workers are, and its exit code (minus the signal's number for one a signal ended) is
kept for ``worker_failures``: the launcher names the signal when a worker was lost.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Iterable, Mapping
from typing import Any

import grpc
from apache_beam.portability.api import beam_fn_api_pb2_grpc, endpoints_pb2
from apache_beam.runners.portability import local_job_service
from apache_beam.runners.portability.fn_api_runner import worker_handlers
from apache_beam.transforms import environments
from apache_beam.utils import thread_pool_executor
from google.protobuf import json_format, text_format

URN = "beamscore:env:fork_server:v1"
# The variables a worker reads its endpoints, options and id from (Beam's names).
WORKER_ENV = ("CONTROL_API_SERVICE_DESCRIPTOR", "LOGGING_API_SERVICE_DESCRIPTOR",
              "PIPELINE_OPTIONS", "WORKER_ID")
COLD_WORKER = [sys.executable, "-m", "apache_beam.runners.worker.sdk_worker_main"]

_LOG = logging.getLogger(__name__)
# Exit codes of this process's workers that ended with an error since workers were last
# started (negative: minus the signal that ended it).
_FAILURES: list[int] = []
_FAILED = threading.Condition()


def worker_failures(wait: float = 0.0) -> list[int]:
    """Exit codes of this process's workers that ended with an error since workers were
    last started (each told once), waiting up to ``wait`` seconds for the first: a lost
    worker's connection may end before its fork server has told its exit code."""
    with _FAILED:
        _FAILED.wait_for(lambda: bool(_FAILURES), timeout=wait)
        found = list(_FAILURES)
        _FAILURES.clear()
        return found


def read_int(conn: socket.socket) -> int | None:
    """The next 4-byte integer the fork server sent, or None if the connection ended."""
    data = b""
    while len(data) < 4:
        try:
            chunk = conn.recv(4 - len(data))
        except OSError:
            return None
        if not chunk:
            return None
        data += chunk
    value: int = struct.unpack("<i", data)[0]
    return value


def request_worker(path: str, env: Mapping[str, str]) -> tuple[socket.socket, int] | None:
    """Ask the fork server at ``path`` for a worker with ``env``: its connection (the
    worker's exit code comes on it) and the worker's pid, or None, with a warning, when
    no worker was forked (the server cannot be reached or went away first)."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(path)
        conn.sendall(json.dumps(dict(env)).encode() + b"\n")
    except OSError as exc:
        conn.close()
        _LOG.warning("the worker fork server cannot be reached (%s): this worker starts "
                     "in a fresh interpreter instead", exc)
        return None
    pid = read_int(conn)
    if pid is None:
        conn.close()
        _LOG.warning("the worker fork server closed the connection before forking a "
                     "worker: this worker starts in a fresh interpreter instead")
        return None
    return conn, pid


class _Logging:
    """One gRPC logging service for the workers of this process's handlers, started by
    the first handler that needs it and stopped when the last one is done."""

    _lock = threading.Lock()
    _server: Any = None
    _descriptor = ""
    _users = 0

    @classmethod
    def acquire(cls) -> str:
        """The service's descriptor (protobuf text), starting it if none runs."""
        with cls._lock:
            if cls._server is None:
                options = [("grpc.http2.max_pings_without_data", 0),
                           ("grpc.http2.max_ping_strikes", 0)]
                server = grpc.server(thread_pool_executor.shared_unbounded_instance(),
                                     options=options)
                port = server.add_insecure_port("localhost:0")
                beam_fn_api_pb2_grpc.add_BeamFnLoggingServicer_to_server(
                    local_job_service.BeamFnLoggingServicer(), server)
                server.start()
                cls._server = server
                cls._descriptor = text_format.MessageToString(
                    endpoints_pb2.ApiServiceDescriptor(url=f"localhost:{port}"))
            cls._users += 1
            return cls._descriptor

    @classmethod
    def release(cls) -> None:
        with cls._lock:
            cls._users -= 1
            if cls._users == 0 and cls._server is not None:
                cls._server.stop(0)
                cls._server = None


@environments.Environment.register_urn(URN, bytes)
class ForkServerEnvironment(environments.Environment):  # type: ignore[misc]
    """Workers forked by the fork server listening on ``socket_path``."""

    def __init__(self, socket_path: str, capabilities: Iterable[str] = (),
                 artifacts: Iterable[Any] = (), resource_hints: Mapping[str, bytes] | None = None):
        super().__init__(capabilities, artifacts, resource_hints)
        self.socket_path = socket_path

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, ForkServerEnvironment) and super().__eq__(other)
                and self.socket_path == other.socket_path)

    def __hash__(self) -> int:
        return hash((super().__hash__(), self.socket_path))

    def __repr__(self) -> str:
        return f"ForkServerEnvironment(socket_path={self.socket_path})"

    def to_runner_api_parameter(self, context: Any) -> tuple[str, bytes]:
        return URN, self.socket_path.encode()

    @staticmethod
    def from_runner_api_parameter(payload: bytes, capabilities: Iterable[str],
                                  artifacts: Iterable[Any], resource_hints: Mapping[str, bytes],
                                  context: Any) -> ForkServerEnvironment:
        return ForkServerEnvironment(payload.decode(), capabilities, artifacts, resource_hints)

    @classmethod
    def of(cls, socket_path: str) -> ForkServerEnvironment:
        """The environment of ``socket_path``'s workers, with a Python SDK's capabilities."""
        return cls(socket_path, capabilities=environments.python_sdk_capabilities())


@worker_handlers.WorkerHandler.register_environment(URN, bytes)
class ForkServerWorkerHandler(worker_handlers.GrpcWorkerHandler):  # type: ignore[misc]
    """A worker forked by the fork server whose socket path is the payload."""

    def __init__(self, payload: bytes, state: Any, provision_info: Any, grpc_server: Any):
        super().__init__(state, provision_info, grpc_server)
        self._socket_path = payload.decode()
        self._thread: threading.Thread | None = None
        self._logging = ""

    def logging_api_service_descriptor(self) -> endpoints_pb2.ApiServiceDescriptor:
        descriptor = endpoints_pb2.ApiServiceDescriptor()
        if self._logging:
            text_format.Parse(self._logging, descriptor)
        return descriptor

    def start_worker(self) -> None:
        with _FAILED:
            _FAILURES.clear()
        self._logging = _Logging.acquire()
        try:
            env = {
                "CONTROL_API_SERVICE_DESCRIPTOR": text_format.MessageToString(
                    endpoints_pb2.ApiServiceDescriptor(url=self.control_address)),
                "LOGGING_API_SERVICE_DESCRIPTOR": self._logging,
                "PIPELINE_OPTIONS": json_format.MessageToJson(
                    self.provision_info.provision_info.pipeline_options),
                "WORKER_ID": self.worker_id,
            }
            self._thread = threading.Thread(target=self._run, args=(env,), daemon=True,
                                            name=f"fork_server_{self.worker_id}")
            self._thread.start()  # the thread releases the logging service when done
        except BaseException:
            self._thread = None
            _Logging.release()
            raise

    def _run(self, env: dict[str, str]) -> None:
        """Have the worker forked (or started cold) and wait for its exit."""
        try:
            forked = request_worker(self._socket_path, env)
            if forked is None:
                code: int | None = subprocess.call(COLD_WORKER, env={**os.environ, **env})
                where = "worker"
            else:
                conn, pid = forked
                with conn:
                    code = read_int(conn)
                where = f"worker (pid {pid})"
            if code is None:  # the worker may run on, its lines to a stopped service
                _LOG.error("the fork server went away while its %s %s ran", where,
                           self.worker_id)
            elif code:
                _LOG.error("%s %s exited with code %s", where, self.worker_id, code)
                with _FAILED:
                    _FAILURES.append(code)
                    _FAILED.notify_all()
                self._lost(where, code)
        finally:
            _Logging.release()

    def _lost(self, where: str, code: int) -> None:
        """The worker is gone: the runner's waits on it end now, with Beam's own words
        for a lost worker (``Channel closed prematurely``, which the launcher reports
        as exit 75 or, for a crash, 1), instead of waiting for its answers for ever."""
        lost = RuntimeError(f"Channel closed prematurely: {where} {self.worker_id} "
                            f"exited with code {code}")
        with contextlib.suppress(Exception):  # a connection never made: nothing waits
            self.control_conn.abort(lost)
        data = getattr(self, "data_conn", None)
        if data is not None:
            data._closed = True  # its reads raise "Channel closed prematurely."

    def stop_worker(self) -> None:
        if self._thread is not None:  # None: start_worker never started it
            self._thread.join()
