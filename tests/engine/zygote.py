"""A fork server for tests that look into the workers it forks (with a probe preload)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

from engine.forkserver import WORKER_ENV, ForkServer


@contextmanager
def serving(preload: str) -> Iterator[ForkServer]:
    """A started and ready fork-method server that pre-imports ``preload``, stopped after."""
    server = ForkServer(preload=[preload], start_method="fork")
    server.start()
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def fork_workers(server: ForkServer, count: int = 1) -> None:
    """Have ``server`` fork ``count`` workers, one after the other. No control endpoint
    is given: each worker exits at once; the fork is what counts."""
    command = server.environment().command_string.split()
    env = {k: v for k, v in os.environ.items() if k not in WORKER_ENV}
    for _ in range(count):
        subprocess.run(command, env=env, capture_output=True, timeout=60)
