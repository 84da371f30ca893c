"""Helpers of the engine tests: code run in a fresh interpreter, the console script run
with a report of its command's process, and a fork server whose forked workers a probe
preload looks into."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from engine.environment import read_int, request_worker
from engine.forkserver import ForkServer

ROOT = Path(__file__).resolve().parents[2]


def in_fresh_python(code: str) -> dict:
    """Run ``code`` in a fresh interpreter (what it changes in its process stays there);
    the JSON object it prints last."""
    run = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                         text=True, timeout=120, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    result: dict = json.loads(run.stdout.strip().splitlines()[-1])
    return result


def console_reports(tmp_path: Path, report: str, args: list[str],
                    env: dict[str, str] | None = None) -> list[object]:
    """Run the ``beamscore`` console script with ``args``; ``report`` (the body of a
    function run at the exit of the process that ran the command, printing one JSON
    value) tells what that process saw. The values printed, in order."""
    script = tmp_path / "console.py"
    body = textwrap.indent(textwrap.dedent(report).strip(), "    ")
    script.write_text("import atexit, json\nimport pipelines.cli as cli\n\n"
                      f"def report():\n{body}\n\n"
                      "atexit.register(lambda: print('report=' + json.dumps(report()),"
                      " flush=True))\ncli.console_main()\n")
    run = subprocess.run([sys.executable, str(script), *args], capture_output=True,
                         text=True, timeout=120, env=dict(os.environ if env is None else env),
                         cwd=ROOT)
    assert run.returncode == 0, run.stderr
    return [json.loads(line[len("report="):]) for line in run.stdout.splitlines()
            if line.startswith("report=")]


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
    for _ in range(count):
        forked = request_worker(server.socket_path, {})
        assert forked is not None
        conn, _ = forked
        with conn:
            read_int(conn)  # its exit code: the worker has exited


def probed_workers(probe_module: str, method: str, path: Path, count: int = 2) -> list[dict]:
    """Have a fork server preloading ``probe_module`` (which appends one JSON line per
    forked worker to ``path``, named by a variable the caller set) fork ``count``
    workers; the lines, after checking none is this process's."""
    server = ForkServer(preload=[probe_module], start_method=method)
    server.start()
    try:
        server.wait_ready()
        fork_workers(server, count)
    finally:
        server.stop()
    workers = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(workers) == count and all(w["pid"] != os.getpid() for w in workers)
    return workers
