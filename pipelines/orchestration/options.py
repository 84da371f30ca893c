"""Beam pipeline options from the config and the flags beamscore passes through.

``runner: FnApiRunner`` is Beam's local engine, chosen explicitly (the plain
DirectRunner first tries to download Prism). With ``workers > 1`` it runs either on
workers forked from ``engine.forkserver`` (``local_engine: fork``) or in Beam's own
``multi_processing`` mode (``spawn``). Flags beamscore does not know must be Beam
options: ``check_beam_args`` rejects anything else, so a typo never passes silently.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
from apache_beam.options.pipeline_options import (
    GoogleCloudOptions,
    PipelineOptions,
    TestOptions,
)

from engine.forkserver import ForkServer
from pipelines.configuration.config import Config, DataflowConfig
from pipelines.orchestration.exit_codes import LaunchError

LOCAL_RUNNERS = ("FnApiRunner", "DirectRunner", "TestDirectRunner")
# What a local worker imports, done once by the fork server's zygote.
WORKER_PRELOAD = (
    "pandas", "pyarrow.parquet", "sklearn.pipeline", "sklearn.feature_extraction.text",
    "sklearn.linear_model", "transforms.read", "transforms.validate", "transforms.infer",
    "transforms.files", "transforms.write", "transforms.dead_letters", "transforms.outcome",
    "transforms.dedupe",
)
TRACKING_PRELOAD = ("transforms.track", "tracking.metrics", "models.behaviour")


@dataclass(frozen=True)
class RunnerSettings:
    """What choosing, configuring and checking the runner read of the config
    (``settings_of(RunnerSettings, cfg)``); the four locations are only checked for the
    shipped overlay's placeholder values."""

    runner: str
    workers: int
    local_engine: str
    dataflow: DataflowConfig
    input_root: str
    output_dir: str
    registry: str
    db: str


def uses_fork_server(runner: RunnerSettings) -> bool:
    return (runner.runner == "FnApiRunner" and runner.workers > 1
            and runner.local_engine == "fork")


def fork_server(runner: RunnerSettings, tracked: bool) -> ForkServer | None:
    """A (not yet started) fork server for this run's local workers, if it uses one;
    its workers pre-import tracking's modules too when the run is ``tracked``."""
    if not uses_fork_server(runner):
        return None
    return ForkServer(WORKER_PRELOAD + (TRACKING_PRELOAD if tracked else ()))


def with_beam_flags(cfg: Config, beam_args: list[str]) -> Config:
    """``cfg`` whose ``dataflow`` section holds what the Beam flags given set of its
    options (``--max_num_workers=50``: they win over the section), so that the run's
    plan cuts its chunks for the workers the job gets and its record says so."""
    names = given_options(beam_args) & {f.name for f in dataclasses.fields(DataflowConfig)}
    if not names:
        return cfg
    values = PipelineOptions(beam_args).get_all_options()
    changes = {k: values[k] for k in names if values.get(k) is not None}
    return dataclasses.replace(cfg, dataflow=dataclasses.replace(cfg.dataflow, **changes))


def pipeline_options(runner: RunnerSettings, beam_args: list[str]) -> PipelineOptions:
    """Options of the configured runner: the ``dataflow`` config section for distributed
    runners, then the flags given (which win)."""
    opts: dict[str, Any] = {"runner": runner.runner}
    if runner.runner in LOCAL_RUNNERS:
        opts["direct_num_workers"] = runner.workers
        # With the fork server the workers come from our environment, not Beam's mode.
        parallel = runner.workers > 1 and not uses_fork_server(runner)
        opts["direct_running_mode"] = "multi_processing" if parallel else "in_memory"
        return PipelineOptions(beam_args, **opts)
    return PipelineOptions([*runner.dataflow.as_flags(given_options(beam_args)), *beam_args],
                           **opts)


def given_options(beam_args: list[str]) -> frozenset[str]:
    """The names of the options ``beam_args`` set (``--max_num_workers=50``, or with
    its value as the next argument): they win over the ``dataflow`` section."""
    return frozenset(a[2:].split("=", 1)[0].replace("-", "_") for a in beam_args
                     if a.startswith("--"))


PLACEHOLDER = "example-"


def check_placeholders(runner: RunnerSettings, beam_args: list[str],
                       keys: tuple[str, ...] | None = None) -> None:
    """Refuse the placeholder values of configs/dataflow.yaml that were not replaced
    (of ``keys`` only, when given: those a command uses)."""
    flat = {"input_root": runner.input_root, "output_dir": runner.output_dir,
            "registry": runner.registry, "db": runner.db}
    flat |= {f"dataflow.{k}": v for k, v in runner.dataflow.__dict__.items()}
    if keys is not None:
        flat = {k: v for k, v in flat.items() if k in keys}
    given = {a.split("=", 1)[0].lstrip("-") for a in beam_args if a.startswith("--")}
    left = [k for k, v in flat.items() if PLACEHOLDER in str(v) and k.split(".")[-1] not in given]
    if left:
        raise LaunchError(
            "placeholder values (example-...) of the shipped config are still set: "
            + ", ".join(f"{k}={flat[k]}" for k in left)
            + "; replace them in your overlay or pass the flags")


def make_pipeline(runner: RunnerSettings, beam_args: list[str],
                  server: ForkServer | None) -> beam.Pipeline:
    """The pipeline to run; on the fork server's workers when one is given (it may still
    be importing: the runner waits for it only once it is about to start workers)."""
    options = pipeline_options(runner, beam_args)
    if server is None:
        return beam.Pipeline(options=options)
    from engine.runner import ForkServerRunner

    return beam.Pipeline(runner=ForkServerRunner(server), options=options)


def stages_a_template(beam_args: list[str]) -> bool:
    """The run only stages a job for a Flex Template launcher (``--template_location``):
    ``run()`` writes the job's description and returns; the job starts after this
    process exits, so its launcher cannot wait for it, renew leases or read its outcome."""
    from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions

    return bool(PipelineOptions(beam_args).view_as(GoogleCloudOptions).template_location)


_LOCAL_ENGINE_FLAGS = ("--direct_num_workers", "--direct_running_mode")


def check_runner(settings: RunnerSettings, beam_args: list[str]) -> None:
    """The runner exists (a name Beam knows or a class path) and its options validate
    (e.g. DataflowRunner needs a project, a region and a gs:// temp_location). Loading
    the runner also registers its own option classes for ``unknown_beam_args``."""
    check_placeholders(settings, beam_args)
    if settings.runner in LOCAL_RUNNERS:
        # pipeline_options sets these from the config: as flags they would change nothing
        given = sorted({a.split("=", 1)[0] for a in beam_args
                        if a.split("=", 1)[0] in _LOCAL_ENGINE_FLAGS})
        if given:
            raise LaunchError(f"{', '.join(given)}: beamscore sets the local runner's "
                              "workers and mode itself; use --workers (and local_engine)")
        return
    from apache_beam.options.pipeline_options_validator import PipelineOptionsValidator
    from apache_beam.runners.runner import create_runner

    try:
        runner = create_runner(settings.runner)
    except (ValueError, ImportError) as exc:
        raise LaunchError(f"runner {settings.runner!r} cannot be used: {exc}") from exc
    options = pipeline_options(settings, beam_args)
    options.view_as(TestOptions).dry_run = True  # validate offline: no bucket lookups
    validator = PipelineOptionsValidator(options, runner)
    if validator.is_service_runner():
        # Beam would try to create a default bucket (online) when neither is usable.
        gcp = options.view_as(GoogleCloudOptions)
        paths = [e for o in ("temp_location", "staging_location")
                 for e in validator.validate_gcs_path(gcp, o)]
        if len(paths) == 2:
            raise LaunchError(f"options for {settings.runner}: " + "; ".join(
                " ".join(e.split()) for e in [*validator.validate_cloud_options(gcp), *paths]))
    errors = validator.validate()
    if errors:
        raise LaunchError(f"options for {settings.runner}: " + "; ".join(
            " ".join(e.split()) for e in errors))


def unknown_beam_args(extra: list[str]) -> list[str]:
    """The flags in ``extra`` that no Beam ``PipelineOptions`` class declares."""
    _, unknown = _beam_parser().parse_known_args(extra)
    return unknown


def beam_option_strings() -> set[str]:
    """The long options Beam's ``PipelineOptions`` classes declare."""
    return {s for s in _beam_parser()._option_string_actions if s.startswith("--")}


def _beam_parser() -> argparse.ArgumentParser:
    beam_parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    for cls in _all_subclasses(PipelineOptions):
        try:
            cls._add_argparse_args(beam_parser)
        except argparse.ArgumentError:
            continue  # an option two classes both declare
    return beam_parser


def _all_subclasses(cls: Any) -> list[Any]:
    out: list[Any] = []
    sub: Any
    for sub in cls.__subclasses__():
        out.append(sub)
        out.extend(_all_subclasses(sub))
    return out
