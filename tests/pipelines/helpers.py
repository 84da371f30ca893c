"""Helpers of the end-to-end tests: the CLI in-process with its output captured, and the
local worker processes this test process started that are still alive."""

from __future__ import annotations

import io
import os
import time
import uuid
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.cli import main
from tests.processes import parent


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


# Every process this test process starts inherits the variable, also one re-parented to
# init once its launcher is gone; another pytest run (or xdist worker) sets its own.
OWNER_ENV = "BEAMSCORE_TEST_OWNER"
os.environ[OWNER_ENV] = f"{os.getpid()}-{uuid.uuid4().hex}"
WORKER_MARKS = ("engine.forkserver", "sdk_worker_main")


def _started_here(pid: int) -> bool:
    """Whether ``pid`` descends from this process or carries its owner token."""
    token = f"{OWNER_ENV}={os.environ[OWNER_ENV]}".encode()
    try:
        if token in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
            return True
        me, ancestor = os.getpid(), pid
        while ancestor > 1:
            ancestor = parent(ancestor)
            if ancestor == me:
                return True
    except (OSError, ValueError):
        return False
    return False


def worker_processes() -> list[str]:
    """Command lines of local worker processes (zygote, client, SDK worker) that this test
    process started and that are still alive; other runs' workers on the host are not
    counted."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if any(mark in cmd for mark in WORKER_MARKS) and _started_here(int(pid)):
            found.append(cmd)
    return found


def workers_left(within: float = 10.0) -> list[str]:
    """``worker_processes()`` once they are all gone, or what is left after ``within``
    seconds (a zygote notices its launcher is gone within half a second)."""
    deadline = time.monotonic() + within
    while (found := worker_processes()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return found


def replace_after_planning(monkeypatch: Any, replace: Callable[[], None]) -> None:
    """``replace()`` runs right after the launcher has listed the tranches, before any
    worker reads: an upstream export overwriting a file as a run starts."""
    from pipelines.orchestration import plan as plan_module

    real = plan_module.plan_tranches

    def listed_then_replaced(*args: Any, **kwargs: Any) -> Any:
        plans = real(*args, **kwargs)
        replace()
        return plans

    monkeypatch.setattr(plan_module, "plan_tranches", listed_then_replaced)
