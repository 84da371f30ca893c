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


def run_cli(*argv: str) -> Result:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = main(list(argv))
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
