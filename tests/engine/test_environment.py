"""The launcher's side of the fork server's protocol (``engine.environment``): a worker's
pid, then its exit code; a server that cannot be reached, or goes away before it forked
the worker, leaves no worker (the handler then starts a cold one); the environment
survives the pipeline proto."""

from __future__ import annotations

import json
import logging
import socket
import struct
import sys
import threading
import types
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from apache_beam.portability.api import beam_provision_api_pb2
from apache_beam.runners import pipeline_context
from apache_beam.runners.portability.fn_api_runner import worker_handlers
from apache_beam.transforms import environments
from google.protobuf import struct_pb2

from engine import environment
from engine.environment import (
    URN,
    ForkServerEnvironment,
    ForkServerWorkerHandler,
    _Logging,
    read_int,
    request_worker,
)

ENV = {"CONTROL_API_SERVICE_DESCRIPTOR": "control:1"}


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[[Callable[[socket.socket], None]], str]]:
    """A fake fork server: accepts one request, reads its line and answers with
    ``answer(conn)``; returns the socket's path."""
    threads: list[threading.Thread] = []
    requests: list[dict[str, str]] = []

    def start(answer: Callable[[socket.socket], None]) -> str:
        path = str(tmp_path / "server.sock")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
        listener.listen(1)

        def run() -> None:
            conn, _ = listener.accept()
            with conn, listener:
                line = conn.makefile("rb").readline()
                requests.append(json.loads(line))
                answer(conn)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        threads.append(thread)
        return path

    yield start
    for thread in threads:
        thread.join(timeout=10)
    assert all(r == ENV for r in requests)


def test_the_worker_pid_then_its_exit_code(serve) -> None:
    path = serve(lambda conn: conn.sendall(struct.pack("<i", 4242) + struct.pack("<i", 7)))
    forked = request_worker(path, ENV)
    assert forked is not None
    conn, pid = forked
    with conn:
        assert pid == 4242
        assert read_int(conn) == 7
        assert read_int(conn) is None  # then the connection ends


def test_a_server_gone_after_forking_the_worker_still_reports_the_worker(serve) -> None:
    """The worker runs on without the zygote: no second (cold) worker for its endpoints."""
    path = serve(lambda conn: conn.sendall(struct.pack("<i", 4242)))
    forked = request_worker(path, ENV)
    assert forked is not None
    conn, pid = forked
    with conn:
        assert (pid, read_int(conn)) == (4242, None)


@pytest.mark.parametrize("answer", [
    pytest.param(lambda conn: None, id="closed-without-a-word"),
    pytest.param(lambda conn: conn.sendall(b"\x01\x02"), id="closed-mid-pid"),
])
def test_a_server_gone_before_forking_leaves_no_worker(
        answer: Callable[[socket.socket], None], serve, caplog: pytest.LogCaptureFixture) -> None:
    """Had the handler waited, the runner would wait for a worker that never connects."""
    path = serve(answer)
    with caplog.at_level(logging.WARNING, logger="engine.environment"):
        assert request_worker(path, ENV) is None
    assert "closed the connection before forking a worker" in caplog.text
    assert "starts in a fresh interpreter instead" in caplog.text


def test_a_server_that_cannot_be_reached_leaves_no_worker(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="engine.environment"):
        assert request_worker(str(tmp_path / "nobody.sock"), ENV) is None
    assert "the worker fork server cannot be reached" in caplog.text


def test_the_environment_round_trips_through_the_pipeline_proto() -> None:
    env = ForkServerEnvironment.of("/run/beamscore-fork-x/zygote.sock")
    context = pipeline_context.PipelineContext()
    proto = env.to_runner_api(context)
    assert proto.urn == URN and proto.payload == b"/run/beamscore-fork-x/zygote.sock"
    back = environments.Environment.from_runner_api(proto, context)
    assert back == env and hash(back) == hash(env)
    assert back != ForkServerEnvironment.of("/elsewhere.sock")
    assert "beam:coder:bytes:v1" in proto.capabilities  # a Python SDK's capabilities


def test_the_runner_makes_the_fork_servers_handler_for_the_environment() -> None:
    assert worker_handlers.WorkerHandler._registered_environments[URN][0] \
        is ForkServerWorkerHandler


def _handler(path: str) -> ForkServerWorkerHandler:
    """A handler for the fork server at ``path``, without a runner's gRPC server (only
    what ``start_worker`` reads is set)."""
    handler = ForkServerWorkerHandler.__new__(ForkServerWorkerHandler)
    handler._socket_path, handler._thread, handler._logging = path, None, ""
    handler.worker_id, handler.control_address = "worker_7", "localhost:1234"
    options = struct_pb2.Struct()
    options.update({"beam:option:job_name:v1": "test"})
    handler.provision_info = types.SimpleNamespace(
        provision_info=beam_provision_api_pb2.ProvisionInfo(pipeline_options=options))
    return handler


def test_a_handler_sends_the_workers_endpoints_and_waits_for_its_exit(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = str(tmp_path / "zygote.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)
    handler = _handler(path)
    with caplog.at_level(logging.ERROR, logger="engine.environment"):
        handler.start_worker()
        conn, _ = listener.accept()
        with conn, listener:
            env = json.loads(conn.makefile("rb").readline())
            logging_service = env["LOGGING_API_SERVICE_DESCRIPTOR"]
            assert _Logging._server is not None and _Logging._users == 1
            conn.sendall(struct.pack("<i", 4242) + struct.pack("<i", 3))
        handler.stop_worker()  # returns once the exit code came
    assert env["CONTROL_API_SERVICE_DESCRIPTOR"] == 'url: "localhost:1234"\n'
    assert env["WORKER_ID"] == "worker_7"
    assert json.loads(env["PIPELINE_OPTIONS"]) == {"beam:option:job_name:v1": "test"}
    assert handler.logging_api_service_descriptor().url in logging_service
    assert "worker (pid 4242) worker_7 exited with code 3" in caplog.text
    assert _Logging._server is None and _Logging._users == 0  # the last one stops it


def test_a_handler_without_a_fork_server_starts_a_cold_worker(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[tuple[list[str], dict[str, str]]] = []
    monkeypatch.setattr(environment.subprocess, "call",
                        lambda argv, env: started.append((argv, env)) or 0)
    handler = _handler(str(tmp_path / "nobody.sock"))
    handler.start_worker()
    handler.stop_worker()
    ((argv, env),) = started
    assert argv == [sys.executable, "-m", "apache_beam.runners.worker.sdk_worker_main"]
    assert env["WORKER_ID"] == "worker_7" and "CONTROL_API_SERVICE_DESCRIPTOR" in env
    assert _Logging._users == 0


def test_a_handler_that_cannot_start_its_thread_releases_the_logging_service(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class Refused(threading.Thread):
        def start(self) -> None:
            raise RuntimeError("can't start new thread")

    monkeypatch.setattr(environment, "threading", types.SimpleNamespace(Thread=Refused))
    handler = _handler(str(tmp_path / "zygote.sock"))
    with pytest.raises(RuntimeError, match="new thread"):
        handler.start_worker()
    assert _Logging._users == 0 and _Logging._server is None
    handler.stop_worker()  # nothing to wait for
