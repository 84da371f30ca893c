"""Helpers of the end-to-end tests: the CLI in-process with its output captured."""

from __future__ import annotations

import io
import os
import time
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

from pipelines.cli import main


@dataclass
class Result:
    rc: int
    out: str
    err: str


# beamscore has no default model: score and plan need --model (or model in the config).
MODEL = "demo"  # the model of the shared test registry (tests/conftest.py)
MODEL_COMMANDS = ("score", "plan")


def with_model(argv: list[str], model: str = MODEL) -> list[str]:
    """``argv`` of a ``score`` or ``plan`` command line with ``--model model`` after the
    command, unless it names a model itself (``--model``)."""
    command = next((i for i, a in enumerate(argv) if a in MODEL_COMMANDS), None)
    if command is None or any(a == "--model" or a.startswith("--model=") for a in argv):
        return list(argv)
    return [*argv[:command + 1], "--model", model, *argv[command + 1:]]


def run_cli(*argv: str, model: str | None = MODEL) -> Result:
    """``beamscore *argv`` in-process; ``score`` and ``plan`` get ``--model model``
    unless they name one (``model=None``: as given)."""
    args = with_model(list(argv), model) if model else list(argv)
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = main(args)
    return Result(rc, out.getvalue(), err.getvalue())


def worker_processes() -> list[str]:
    """Command lines of local worker processes (zygote, client, SDK worker) still alive."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "engine.forkserver" in cmd or "engine/client.py" in cmd or "sdk_worker_main" in cmd:
            found.append(cmd)
    return found


def workers_left(within: float = 10.0) -> list[str]:
    """``worker_processes()`` once they are all gone, or what is left after ``within``
    seconds (a zygote notices its launcher is gone within half a second)."""
    deadline = time.monotonic() + within
    while (found := worker_processes()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return found
