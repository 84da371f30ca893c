"""A run's SDK workers are stopped together: teardown costs one worker's exit, not W."""

from __future__ import annotations

import collections
import time
from types import SimpleNamespace

from apache_beam.runners.portability.fn_api_runner import worker_handlers

from engine.forkserver import ForkServer


class _SlowWorker:
    """A worker handler whose close waits for its process to exit (0.3 s)."""

    def __init__(self, closed: list[str], name: str):
        self._closed, self._name = closed, name

    def close(self) -> None:
        time.sleep(0.3)
        self._closed.append(self._name)


def test_workers_are_closed_at_once_not_one_after_another() -> None:
    server = ForkServer(preload=["json"], start_method="spawn")
    server.start()  # installs the parallel teardown for this process's runs
    server.stop()
    closed: list[str] = []
    handlers = [_SlowWorker(closed, f"w{i}") for i in range(8)]
    manager = SimpleNamespace(
        _cached_handlers=collections.defaultdict(list, {"env": handlers}),
        _workers_by_id={f"w{i}": h for i, h in enumerate(handlers)}, _grpc_server=None)
    started = time.monotonic()
    worker_handlers.WorkerHandlerManager.close_all(manager)  # type: ignore[arg-type]
    took = time.monotonic() - started
    assert sorted(closed) == [f"w{i}" for i in range(8)]  # every worker closed
    assert took < 1.2, f"8 workers took {took:.2f}s to close: one after another"
    assert not manager._cached_handlers and not manager._workers_by_id
