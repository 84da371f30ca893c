"""The allocator settings: the console script runs under them, once, with Arrow
allocating from glibc's heap; the image sets the same; a variable already set, or
another C library, is left alone."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from engine import allocator

ROOT = Path(__file__).resolve().parents[2]
# Prints the variable as this interpreter sees it, then runs the console script (with
# the arguments it is given: --help).
_PROBE = ("import os, sys\n"
          "print('tunables=' + os.environ.get('GLIBC_TUNABLES', '(unset)'), flush=True)\n"
          "import pipelines.cli as cli\n"
          "cli.console_main()\n")
# The same, printing also the pool Arrow allocates from in each process.
_POOL_PROBE = ("import os, sys, pyarrow\n"
               "print('tunables=' + os.environ.get('GLIBC_TUNABLES', '(unset)')"
               " + ' pool=' + pyarrow.default_memory_pool().backend_name, flush=True)\n"
               "import pipelines.cli as cli\n"
               "cli.console_main()\n")
_NAMES = ("GLIBC_TUNABLES", "ARROW_DEFAULT_MEMORY_POOL")


def _env(tunables: str | None, pool: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _NAMES}
    if tunables is not None:
        env["GLIBC_TUNABLES"] = tunables
    if pool is not None:
        env["ARROW_DEFAULT_MEMORY_POOL"] = pool
    return env


def _console(env_tunables: str | None, tmp_path: Path, *, pool: str | None = None,
             probe: str = _PROBE) -> list[str]:
    script = tmp_path / "console.py"
    script.write_text(probe)
    run = subprocess.run([sys.executable, str(script), "--help"], capture_output=True,
                         text=True, timeout=60, env=_env(env_tunables, pool), cwd=ROOT)
    assert run.returncode == 0, run.stderr
    return run.stdout.splitlines()


@pytest.mark.skipif(not allocator.uses_glibc(), reason="the settings are glibc's")
def test_the_console_script_runs_again_once_with_the_tunables(tmp_path: Path) -> None:
    lines = _console(None, tmp_path)
    seen = [line for line in lines if line.startswith("tunables=")]
    assert seen == ["tunables=(unset)", f"tunables={allocator.TUNABLES}"]
    assert sum(line.startswith("usage: beamscore") for line in lines) == 1, \
        "the command itself runs once, in the second process"


@pytest.mark.skipif(not allocator.uses_glibc(), reason="the settings are glibc's")
def test_arrow_allocates_from_glibc_in_the_process_run_again(tmp_path: Path) -> None:
    """Arrow's default pool (mimalloc, or jemalloc) gives way to glibc's heap, which
    the tunables configure; a pool named in the environment is kept."""
    lines = _console(None, tmp_path, probe=_POOL_PROBE)
    seen = [line for line in lines if line.startswith("tunables=")]
    assert len(seen) == 2 and seen[0].startswith("tunables=(unset) pool=")
    assert seen[0] != f"tunables=(unset) pool={allocator.ARROW_POOL}", \
        "Arrow's own default is another pool, or this test shows nothing"
    assert seen[1] == f"tunables={allocator.TUNABLES} pool={allocator.ARROW_POOL}"

    named = _console(None, tmp_path, pool="jemalloc", probe=_POOL_PROBE)
    assert [line for line in named if line.startswith("tunables=")] == [
        "tunables=(unset) pool=jemalloc", f"tunables={allocator.TUNABLES} pool=jemalloc"]


@pytest.mark.parametrize("given", ["", "glibc.malloc.arena_max=2"])
def test_tunables_already_set_are_left_alone(given: str, tmp_path: Path) -> None:
    lines = _console(given, tmp_path)
    assert [line for line in lines if line.startswith("tunables=")] == [f"tunables={given}"]
    assert any(line.startswith("usage: beamscore") for line in lines)
    pool = [line for line in _console(given, tmp_path, probe=_POOL_PROBE)
            if line.startswith("tunables=")]
    assert len(pool) == 1 and not pool[0].endswith(f" pool={allocator.ARROW_POOL}"), \
        "Arrow keeps its own pool where glibc keeps its own settings"


@pytest.mark.skipif(not allocator.uses_glibc(), reason="the settings are glibc's")
def test_a_program_that_cannot_be_run_again_runs_on_as_it_is() -> None:
    """A ``-c`` program or one read from standard input: executing it again would run
    something else (stdin is already read), so it keeps glibc's defaults."""
    for args, stdin in (([sys.executable, "-c", _PROBE, "--help"], None),
                        ([sys.executable, "-", "--help"], _PROBE)):
        run = subprocess.run(args, input=stdin, capture_output=True, text=True, timeout=60,
                             env=_env(None), cwd=ROOT)
        assert run.returncode == 0, run.stderr
        lines = run.stdout.splitlines()
        assert [line for line in lines if line.startswith("tunables=")] == \
            ["tunables=(unset)"]
        assert sum(line.startswith("usage: beamscore") for line in lines) == 1


def test_a_closed_output_stream_does_not_stop_the_run_again(tmp_path: Path) -> None:
    """With stdout closed at start (``sys.stdout`` is None) the command still runs."""
    script = tmp_path / "console.py"
    marker = tmp_path / "ran"
    script.write_text("import os, sys\n"
                      f"open({str(marker)!r}, 'a').write(os.environ.get('GLIBC_TUNABLES', '-')"
                      " + '\\n')\n"
                      "import pipelines.cli as cli\n"
                      "cli.console_main()\n")
    run = subprocess.run([sys.executable, str(script), "db", "--help"],
                         stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True, timeout=60, env=_env(None),
                         cwd=ROOT, preexec_fn=lambda: os.close(1))
    assert run.returncode == 0, run.stderr
    expected = ["-", allocator.TUNABLES] if allocator.uses_glibc() else ["-"]
    assert marker.read_text().splitlines() == expected


def test_another_c_library_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    monkeypatch.delenv("ARROW_DEFAULT_MEMORY_POOL", raising=False)
    monkeypatch.setattr(allocator, "uses_glibc", lambda: False)
    monkeypatch.setattr(os, "execv", lambda *a: pytest.fail("executed again"))
    allocator.reexec()
    assert "GLIBC_TUNABLES" not in os.environ
    assert "ARROW_DEFAULT_MEMORY_POOL" not in os.environ


def test_the_image_sets_the_same_tunables_for_dataflow_workers() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.findall(r"GLIBC_TUNABLES=(\S+)", dockerfile) == [allocator.TUNABLES]
    assert re.findall(r"ARROW_DEFAULT_MEMORY_POOL=(\S+)", dockerfile) == [allocator.ARROW_POOL]
