"""The fork server's runner: the pipeline is translated while the zygote imports, and
the zygote is waited for only when the workers are about to start."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner import fn_runner
from apache_beam.testing.util import assert_that, equal_to

from engine.forkserver import ForkServer
from engine.runner import ForkServerRunner
from tests.engine import imports_probe, preload_probe


@pytest.mark.slow
def test_the_pipeline_runs_on_a_zygote_that_was_still_importing_when_run_began(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The zygote's preload takes a second; ``run()`` starts at once: the pipeline is
    translated and fused first, then the runner waits for the zygote, and the workers
    it forks give the right result."""
    (tmp_path / "slow_preload.py").write_text("import time\ntime.sleep(1.0)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}:{':'.join(sys.path)}")
    events: list[str] = []
    create_stages = fn_runner.FnApiRunner.create_stages
    wait_ready = ForkServer.wait_ready
    monkeypatch.setattr(fn_runner.FnApiRunner, "create_stages",
                        lambda self, proto: events.append("fused")  # type: ignore[func-returns-value]
                        or create_stages(self, proto))
    monkeypatch.setattr(ForkServer, "wait_ready",
                        lambda self: events.append("waited") or wait_ready(self))  # type: ignore[func-returns-value]
    server = ForkServer(preload=["slow_preload"])
    server.start()
    try:
        options = PipelineOptions(direct_num_workers=1)
        with beam.Pipeline(runner=ForkServerRunner(server), options=options) as p:
            doubled = p | beam.Create([1, 2, 3]) | beam.Map(lambda x: x * 2)
            assert_that(doubled, equal_to([2, 4, 6]))
    finally:
        server.stop()
    assert events[:2] == ["fused", "waited"]


@pytest.mark.slow
def test_a_zygote_that_cannot_start_fails_the_run_with_the_fork_servers_error() -> None:
    server = ForkServer(preload=["no_such_module_anywhere"], ready_timeout=60)
    server.start()
    p = beam.Pipeline(runner=ForkServerRunner(server))
    _ = p | beam.Create([1]) | beam.Map(str)
    with pytest.raises(RuntimeError, match="fork server did not start"):
        p.run()
    server.stop()


@pytest.mark.slow
def test_workers_are_forked_after_the_preloads_and_inherit_what_they_made(
        monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
    """A preload runs once, in the zygote, before it forks any worker; one that fails
    there, even by SystemExit, leaves the run as it would have been, and says so. The
    zygote is spawned: this test process may have run gRPC already, so a zygote forked
    from it could not serve (a fresh launcher's forked zygote runs the same code:
    tests/pipelines/test_cli.py)."""
    monkeypatch.setenv("PYTHONPATH", ":".join(sys.path))  # the spawned zygote imports tests.*
    server = ForkServer(preload=["tests.engine.preload_probe"], start_method="spawn")
    server.start()
    server.preload(preload_probe.fail)
    server.preload(functools.partial(preload_probe.make, "model"))
    try:
        options = PipelineOptions(direct_num_workers=2)
        with beam.Pipeline(runner=ForkServerRunner(server), options=options) as p:
            seen = (p | beam.Create(list(range(8)))
                    | beam.Map(lambda _: (tuple(preload_probe.MADE), os.getpid()))
                    | beam.combiners.ToList())

            def made_once_in_the_zygote(found: list[list[Any]]) -> None:
                (pairs,) = found
                assert {made for made, _ in pairs} == {(("model", server.pid),)}
                assert server.pid not in {pid for _, pid in pairs}

            assert_that(seen, made_once_in_the_zygote)
    finally:
        server.stop()
    assert preload_probe.MADE == [], "the launcher itself runs no preload"
    assert "a preload failed, workers do it themselves: SystemExit: a preload that exits" \
        in capfd.readouterr().err


@pytest.mark.slow
def test_a_forked_worker_imports_nothing_its_zygote_had_not(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever Beam's SDK worker imports to start and to run its stages (the first, and
    one after a shuffle), the zygote imported once already (``SDK_WORKER_MODULES`` and
    ``SDK_WORKER_OPTIONAL_MODULES``): no worker pays for an import of its own."""
    monkeypatch.setenv("PYTHONPATH", ":".join(sys.path))  # the spawned zygote imports tests.*
    server = ForkServer(preload=["tests.engine.imports_probe"], start_method="spawn")
    server.start()
    server.preload(imports_probe.install)
    try:
        with beam.Pipeline(runner=ForkServerRunner(server),
                           options=PipelineOptions(direct_num_workers=2)) as p:
            elements = p | beam.Create(list(range(8)))
            first = elements | "Probe" >> beam.Map(imports_probe.imported_since_fork)
            later = (elements | beam.Map(imports_probe.keyed) | beam.GroupByKey()
                     | "Probe after a shuffle" >> beam.Map(imports_probe.imported_since_fork))
            found = (first, later) | beam.Flatten() | beam.combiners.ToList()

            def none_imported(lists: list[list[tuple[int, list[str]]]]) -> None:
                (pairs,) = lists
                assert len(pairs) == 10 and server.pid not in {pid for pid, _ in pairs}
                assert {module for _, new in pairs for module in new} == set()

            assert_that(found, none_imported)
    finally:
        server.stop()


# Kills the zygote once it serves, then runs a pipeline on its runner.
_ORPHANED_RUN = """
import os, signal
import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.util import assert_that, equal_to
from engine.forkserver import ForkServer
from engine.runner import ForkServerRunner

server = ForkServer(preload=["json"])
server.start()
server.wait_ready()
os.kill(server.pid, signal.SIGKILL)
try:
    with beam.Pipeline(runner=ForkServerRunner(server),
                       options=PipelineOptions(direct_num_workers=2)) as p:
        assert_that(p | beam.Create([1, 2, 3]) | beam.Map(lambda x: x * 2),
                    equal_to([2, 4, 6]))
finally:
    server.stop()
print("run completed")
"""


@pytest.mark.slow
def test_a_fork_server_that_died_after_it_served_leaves_cold_workers_to_do_the_run() -> None:
    """Killed (say, by the kernel's OOM killer) after it reported ready, the zygote
    cannot fork the workers: each client becomes a worker in a fresh interpreter, and
    the run completes instead of waiting for workers that never connect (in a process
    of its own, killed with its workers if it hangs)."""
    proc = subprocess.Popen([sys.executable, "-c", _ORPHANED_RUN], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            cwd=Path(__file__).resolve().parents[2])
    try:
        out, err = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("the run waited for workers that never came")
    assert proc.returncode == 0, err
    assert "run completed" in out
    assert "the worker fork server cannot be reached" in err
