"""glibc's allocator settings: the console script runs under them, once; the image
sets the same; a variable already set, or another C library, is left alone."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from engine import allocator

ROOT = Path(__file__).resolve().parents[2]
# Prints the variable as this interpreter sees it, then runs the console script.
_PROBE = ("import os, sys\n"
          "print('tunables=' + os.environ.get('GLIBC_TUNABLES', '(unset)'), flush=True)\n"
          "import pipelines.cli as cli\n"
          "sys.argv = ['beamscore', '--help']\n"
          "cli.console_main()\n")


def _console(env_tunables: str | None) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    if env_tunables is not None:
        env["GLIBC_TUNABLES"] = env_tunables
    run = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True,
                         timeout=60, env=env, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    return run.stdout.splitlines()


@pytest.mark.skipif(not allocator.uses_glibc(), reason="the settings are glibc's")
def test_the_console_script_runs_again_once_with_the_tunables() -> None:
    lines = _console(None)
    seen = [line for line in lines if line.startswith("tunables=")]
    assert seen == ["tunables=(unset)", f"tunables={allocator.TUNABLES}"]
    assert sum(line.startswith("usage: beamscore") for line in lines) == 1, \
        "the command itself runs once, in the second process"


@pytest.mark.parametrize("given", ["", "glibc.malloc.arena_max=2"])
def test_tunables_already_set_are_left_alone(given: str) -> None:
    lines = _console(given)
    assert [line for line in lines if line.startswith("tunables=")] == [f"tunables={given}"]
    assert any(line.startswith("usage: beamscore") for line in lines)


def test_another_c_library_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    monkeypatch.setattr(allocator, "uses_glibc", lambda: False)
    monkeypatch.setattr(os, "execv", lambda *a: pytest.fail("executed again"))
    allocator.reexec()
    assert "GLIBC_TUNABLES" not in os.environ


def test_the_image_sets_the_same_tunables_for_dataflow_workers() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.findall(r"GLIBC_TUNABLES=(\S+)", dockerfile) == [allocator.TUNABLES]
