"""Runner choice, pass-through Beam options and the shipped Dataflow overlay."""

from __future__ import annotations

import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from pipelines.configuration.config import load_config, settings_of
from pipelines.orchestration.exit_codes import LaunchError
from pipelines.orchestration.launch import machines
from pipelines.orchestration.options import (
    RunnerSettings,
    check_placeholders,
    check_runner,
    pipeline_options,
    unknown_beam_args,
    with_beam_flags,
)

READY = ["--project=beamscore-prod", "--temp_location=gs://beamscore-temp/tmp",
         "--staging_location=gs://beamscore-temp/staging"]
PATHS = {"input_root": "gs://beamscore-landing/documents", "output_dir": "gs://beamscore-out",
         "registry": "gs://beamscore-models/registry"}


def _runner(config: str | None = None, overrides: dict[str, Any] | None = None
            ) -> RunnerSettings:
    return settings_of(RunnerSettings, load_config(config, overrides))


@pytest.mark.parametrize("runner", [
    "PortableRunner", "apache_beam.runners.portability.portable_runner.PortableRunner",
    "FnApiRunner", "DataflowRunner"])
def test_runner_names_and_class_paths_are_accepted(runner: str) -> None:
    extra = READY + ["--region=europe-west1"] if runner == "DataflowRunner" else []
    check_runner(_runner(None, {"runner": runner} | (PATHS if extra else {})), extra)


@pytest.mark.parametrize("flags", [["--direct_num_workers=4"],
                                   ["--direct_running_mode", "multi_processing"],
                                   ["--direct_num_workers", "4",
                                    "--direct_running_mode=in_memory"]])
def test_the_local_runners_own_worker_flags_are_refused_naming_workers(
        flags: list[str]) -> None:
    """beamscore sets them from ``workers`` and ``local_engine``: given as Beam flags they
    would be overridden without a word."""
    with pytest.raises(LaunchError, match="use --workers") as exc:
        check_runner(_runner(), flags)
    assert flags[0].split("=")[0] in str(exc.value)
    check_runner(_runner(), ["--direct_runner_bundle_repeat=0"])  # another local option


def test_a_runner_typo_is_refused_naming_it() -> None:
    with pytest.raises(LaunchError, match="runner 'DataflowRuner' cannot be used"):
        check_runner(_runner(None, {"runner": "DataflowRuner"}), [])


def test_options_of_a_runner_module_not_yet_imported_are_recognised(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "late_runner.py").write_text(textwrap.dedent('''
        from apache_beam.options.pipeline_options import PipelineOptions
        from apache_beam.runners.runner import PipelineRunner

        class LateOptions(PipelineOptions):
            @classmethod
            def _add_argparse_args(cls, parser):
                parser.add_argument("--late_cluster_address")

        class LateRunner(PipelineRunner):
            def run_pipeline(self, pipeline, options):
                raise NotImplementedError
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    flag = ["--late_cluster_address=tcp://10.0.0.1:8786"]
    assert "late_runner" not in sys.modules and unknown_beam_args(flag) == flag
    check_runner(_runner(None, {"runner": "late_runner.LateRunner"}), flag)
    assert unknown_beam_args(flag) == []


def test_the_shipped_dataflow_overlay_refuses_its_placeholders() -> None:
    with pytest.raises(LaunchError) as exc:
        check_placeholders(_runner("dataflow"), [])
    message = str(exc.value)
    for key in ("input_root", "dataflow.project", "dataflow.temp_location",
                "dataflow.sdk_container_image"):
        assert key in message
    check_placeholders(_runner("dataflow", PATHS), [
        *READY, "--service_account_email=sa@beamscore-prod.iam",
        "--sdk_container_image=europe-docker.pkg.dev/p/r/beamscore:1"])


def test_the_shipped_dataflow_overlay_rate_limit_works_without_redis() -> None:
    cfg = load_config("dataflow")
    assert cfg.sink.max_rows_per_second > 0 and not cfg.sink.redis_url
    shared = machines(settings_of(RunnerSettings, cfg), cfg.sink, [])
    assert shared == cfg.dataflow.max_num_workers == 10
    assert cfg.sink.max_rows_per_second / shared == 2000
    flags = cfg.dataflow.as_flags()
    assert "--max_num_workers=10" in flags and "--experiments=use_runner_v2" in flags


def test_plan_refuses_the_placeholders_of_what_it_reads_at_once() -> None:
    """``plan`` with the shipped Dataflow overlay names the placeholders it would read
    (input root, registry) and exits 1 at once, before any network call."""
    from tests.pipelines.helpers import run_cli

    started = time.monotonic()
    result = run_cli("plan", "--config", "dataflow", "--date", "2026-01-01")
    assert result.rc == 1, result.err
    assert time.monotonic() - started < 30
    line = result.err.strip().splitlines()[-1]
    assert line.startswith("beamscore: error: placeholder values (example-...) of the "
                           "shipped config are still set: input_root=gs://example-landing")
    assert "registry=" in line and "dataflow.project" not in line
    ok = run_cli("plan", "--config", "dataflow", "--date", "2026-01-01", "--input-root",
                 "/nonexistent/landing", "--registry", "/nonexistent/registry",
                 "--db", "sqlite:////nonexistent/x.db")
    assert "placeholder" not in ok.err


def test_beam_flags_on_the_command_line_replace_the_dataflow_sections_options() -> None:
    """The flags given win over the ``dataflow`` section: a list option (experiments)
    is the command line's alone, not the config's with the flag's added."""
    from apache_beam.options.pipeline_options import DebugOptions, WorkerOptions

    runner = settings_of(RunnerSettings, load_config("dataflow"))
    assert "use_runner_v2" in runner.dataflow.experiments
    opts = pipeline_options(runner, ["--experiments=disable_runner_v2",
                                     "--max_num_workers=50"])
    assert opts.view_as(DebugOptions).experiments == ["disable_runner_v2"]
    assert opts.view_as(WorkerOptions).max_num_workers == 50
    kept = pipeline_options(runner, [])
    assert kept.view_as(DebugOptions).experiments == runner.dataflow.experiments
    assert kept.view_as(WorkerOptions).max_num_workers == runner.dataflow.max_num_workers


def test_the_plan_cuts_for_the_workers_the_beam_flags_give_the_job() -> None:
    """``--max_num_workers=50`` on the command line: the job gets 50 workers, and the
    config the run plans with (and records) says 50, not the overlay's 10."""
    cfg = load_config("dataflow")
    assert cfg.dataflow.max_num_workers == 10
    given = with_beam_flags(cfg, ["--max_num_workers=50", "--machine_type=n2-standard-4",
                                  "--experiments=disable_runner_v2", "--job_name=x"])
    assert given.dataflow.max_num_workers == 50 and given.dataflow.machine_type == \
        "n2-standard-4"
    assert given.dataflow.experiments == ["disable_runner_v2"]
    assert given.parallelism == 50 * 4 and cfg.parallelism == 10 * cfg.dataflow.cores_per_worker
    assert with_beam_flags(cfg, []) is cfg
