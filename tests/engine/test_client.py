"""The worker command's side of the fork server's protocol: a worker's pid, then its exit
code; a server that goes away before it forked a worker leaves a cold worker instead."""

from __future__ import annotations

import json
import os
import socket
import struct
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from engine import client


class _Exec(Exception):
    """Raised in place of ``os.execv``: the client became a cold worker."""


@pytest.fixture
def execs(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    calls: list[list[str]] = []

    def execv(path: str, argv: list[str]) -> None:
        calls.append(argv)
        raise _Exec

    monkeypatch.setattr(os, "execv", execv)
    return calls


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[[Callable[[socket.socket], None]], str]]:
    """A fake fork server: accepts one client, reads its request line and answers with
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
    assert all(r == {"CONTROL_API_SERVICE_DESCRIPTOR": "control:1"} for r in requests)


@pytest.fixture(autouse=True)
def endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONTROL_API_SERVICE_DESCRIPTOR", "control:1")


KEYS = ["CONTROL_API_SERVICE_DESCRIPTOR", "LOGGING_API_SERVICE_DESCRIPTOR"]


def test_the_worker_exit_code_is_the_clients(serve, execs) -> None:
    path = serve(lambda conn: conn.sendall(struct.pack("<i", 4242) + struct.pack("<i", 7)))
    assert client.main(path, KEYS) == 7
    assert execs == []


def test_a_server_gone_after_forking_the_worker_leaves_that_worker(serve, execs) -> None:
    """The worker runs on without the zygote: no second worker for the same endpoints."""
    path = serve(lambda conn: conn.sendall(struct.pack("<i", 4242)))
    assert client.main(path, KEYS) == 1
    assert execs == []


@pytest.mark.parametrize("answer", [
    pytest.param(lambda conn: None, id="closed-without-a-word"),
    pytest.param(lambda conn: conn.sendall(b"\x01\x02"), id="closed-mid-pid"),
])
def test_a_server_gone_before_forking_leaves_a_cold_worker(
        answer: Callable[[socket.socket], None], serve, execs,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Had the client exited, the runner would wait for a worker that never connects."""
    path = serve(answer)
    with pytest.raises(_Exec):
        client.main(path, KEYS)
    assert execs == [[sys.executable, "-m", "apache_beam.runners.worker.sdk_worker_main"]]
    assert "the worker fork server cannot be reached" in capsys.readouterr().err


def test_a_server_that_cannot_be_reached_leaves_a_cold_worker(tmp_path: Path, execs) -> None:
    with pytest.raises(_Exec):
        client.main(str(tmp_path / "nobody.sock"), KEYS)
    assert len(execs) == 1
