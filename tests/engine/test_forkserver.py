"""The fork server: a zygote that forks workers on request and leaves nothing behind."""

from __future__ import annotations

import os
import socket
import time

import pytest

from engine.environment import URN, read_int, request_worker
from engine.forkserver import ForkServer
from tests.processes import running


@pytest.mark.parametrize("method", ["fork", pytest.param("spawn", marks=pytest.mark.slow)])
def test_zygote_serves_workers_and_stops_with_no_process_left(method: str) -> None:
    server = ForkServer(preload=["json"], start_method=method)
    server.start()
    try:
        server.wait_ready()
        zygote, socket_path = server.pid, server.socket_path
        assert os.path.exists(socket_path)
        assert running(zygote)
        environment = server.environment()
        assert environment.to_runner_api_parameter(None) == (URN, socket_path.encode())
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stray:  # not a request
            stray.connect(socket_path)
            stray.sendall(b"not a request\n")
        # No control endpoint given: Beam's worker exits at once with an error, and the
        # zygote reports that worker's exit code.
        started = time.monotonic()
        codes = []
        for _ in range(2):
            forked = request_worker(socket_path, {})
            assert forked is not None
            conn, pid = forked
            with conn:
                codes.append(read_int(conn))
        assert codes[0] == codes[1] is not None and codes[0] != 0
        assert time.monotonic() - started < 30
        assert running(zygote), "the zygote keeps serving after its workers exit"
    finally:
        server.stop()
    assert not running(zygote)
    assert not os.path.exists(socket_path)
    server.preload(print)  # after stop: kept for no one, sent nowhere


def test_a_request_is_answered_with_the_workers_pid_then_its_exit_code() -> None:
    """What ``engine.environment`` reads: the pid tells it a worker runs (a zygote gone
    after it no longer calls for a cold worker), then the worker's exit code."""
    server = ForkServer(preload=["json"], start_method="fork")
    server.start()
    try:
        server.wait_ready()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.connect(server.socket_path)
            conn.sendall(b"{}\n")  # no endpoints: Beam's worker fails at once
            pid = read_int(conn)
            code = read_int(conn)
            assert conn.recv(1) == b""
    finally:
        server.stop()
    assert pid is not None and pid not in (0, server.pid, os.getpid())
    assert code is not None and code != 0


@pytest.mark.slow
def test_a_zygote_that_cannot_start_is_reported() -> None:
    server = ForkServer(preload=["no_such_module_anywhere"], start_method="spawn",
                        ready_timeout=60)
    server.start()
    with pytest.raises(RuntimeError, match="fork server did not start"):
        server.wait_ready()


def test_unknown_start_method_is_refused() -> None:
    with pytest.raises(ValueError, match="start_method"):
        ForkServer(preload=[], start_method="thread")


def test_after_any_fork_server_an_auto_one_is_spawned_not_forked() -> None:
    """A run on a spawned fork server brings gRPC up in this process: a later ``auto``
    start must not fork it (a child forked after gRPC ran can crash or hang)."""
    first = ForkServer(preload=["json"], start_method="spawn")
    first.start()
    first.wait_ready()
    first.stop()
    later = ForkServer(preload=["json"], start_method="auto")
    later.start()
    try:
        assert later._proc is not None  # a fresh interpreter, not a fork of this process
        later.wait_ready()
    finally:
        later.stop()
