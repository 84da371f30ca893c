"""``run(argv, test_pipeline=None)``: score tranches, the one entry every caller shares.

``beamscore score``, the Flex Template entry, scheduled runs, backfills and tests all
call ``run`` with ``beamscore score``'s arguments; it returns the exit code
(``pipelines.exit_codes``). ``execute`` does the work: launch (``pipelines.launch``),
build the graph (``pipelines.graph``) on a pipeline of the configured runner (or the
caller's test pipeline), run it and read the summary the pipeline recorded.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
import time
from typing import Any

import apache_beam as beam

from engine.forkserver import ForkServer
from landing.tranches import date_range
from pipelines.config import Config, ConfigError, add_config_flags, load_config, overrides_from_args
from pipelines.exit_codes import EXIT_BUSY, EXIT_DEAD_LETTERS, EXIT_MISSING, EXIT_OK, guarded
from pipelines.graph import build_pipeline
from pipelines.launch import (
    LeaseKeeper,
    acquire_tranches,
    fail_run,
    resolve_model,
    run_summary,
    sink_settings,
    start_run,
)
from pipelines.options import fork_server, make_pipeline, unknown_beam_args
from pipelines.plan import make_plan
from pipelines.summary import RunOutcome, format_summary
from store import runs
from store.ledger import BUSY, SKIP
from transforms.summarise import RATIO_EXCEEDED

_LOG = logging.getLogger(__name__)


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from exc


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments ``score`` and ``plan`` share: dates, --force, every config key."""
    when = parser.add_mutually_exclusive_group()
    when.add_argument("--date", type=_date, help="one tranche (default: yesterday, UTC)")
    when.add_argument("--from", dest="date_from", type=_date, help="first tranche of a range")
    parser.add_argument("--to", dest="date_to", type=_date, help="last tranche of a range")
    parser.add_argument("--force", dest="cfg:force", action="store_const", const=True,
                        default=None, help="rescore tranches the ledger has completed")
    add_config_flags(parser, skip={"force"})


def requested_dates(args: argparse.Namespace) -> list[dt.date]:
    if args.date_from or args.date_to:
        if not (args.date_from and args.date_to):
            raise ConfigError("--from and --to go together")
        return date_range(args.date_from, args.date_to)
    return [args.date or (dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=1))]


def score_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="beamscore score", description="Score tranches; flags beamscore does not know "
        "are passed to Beam (--runner, --project, --temp_location ...).")
    add_run_arguments(parser)
    return parser


def run(argv: list[str] | None = None, test_pipeline: beam.Pipeline | None = None) -> int:
    """Score the tranches ``argv`` names (``beamscore score``'s arguments); print the
    summary; return the exit code. ``test_pipeline`` replaces the configured runner's
    pipeline (tests)."""
    parser = score_parser()
    args, beam_args = parser.parse_known_args(argv)
    bad = [a for a in beam_args if a.startswith("-") and not a.startswith("--")]
    if bad:
        parser.error(f"unrecognized arguments: {' '.join(bad)}")

    def score() -> int:
        cfg = load_config(args.config, overrides_from_args(args))
        unknown = unknown_beam_args(beam_args) if beam_args else []
        if unknown:
            parser.error("unrecognized arguments (neither beamscore nor Beam options): "
                         + " ".join(unknown))
        outcome = execute(cfg, requested_dates(args), beam_args, test_pipeline)
        print(format_summary(outcome))
        return exit_code(cfg, outcome)

    return guarded(score)


def exit_code(cfg: Config, outcome: RunOutcome) -> int:
    """The exit code of a finished run, with one stderr line saying why when not 0."""
    plan = outcome.plan
    if not outcome.run_id and plan.with_decision(SKIP):
        print("beamscore: nothing to do: every tranche is already scored with this model "
              "and these inputs (use --force to rescore)", file=sys.stderr)
    if outcome.summary and outcome.summary.get("status") == RATIO_EXCEEDED:
        print(f"beamscore: dead-letter ratio {outcome.summary['dead_letter_ratio']:.4f} exceeds "
              f"max_dead_letter_ratio={cfg.max_dead_letter_ratio}", file=sys.stderr)
        return EXIT_DEAD_LETTERS
    if plan.missing:
        print("beamscore: missing tranche(s): " + ", ".join(t.tranche for t in plan.missing),
              file=sys.stderr)
        return EXIT_MISSING
    if plan.with_decision(BUSY):
        print("beamscore: tranche(s) being scored by another run, left to it: "
              + ", ".join(t.tranche for t in plan.with_decision(BUSY)), file=sys.stderr)
        return EXIT_BUSY
    return EXIT_OK


def execute(cfg: Config, dates: list[dt.date], beam_args: list[str],
            test_pipeline: beam.Pipeline | None = None, wait: bool = True) -> RunOutcome:
    """Launch, build the graph and run it; the outcome as the pipeline recorded it."""
    server = fork_server(cfg) if test_pipeline is None else None
    if server is not None:
        server.start()  # its imports overlap the launch work below
    try:
        return _execute(cfg, dates, beam_args, test_pipeline, wait, server)
    finally:
        if server is not None:
            server.stop()


def _execute(cfg: Config, dates: list[dt.date], beam_args: list[str],
             test_pipeline: beam.Pipeline | None, wait: bool,
             server: ForkServer | None) -> RunOutcome:
    sink = sink_settings(cfg, beam_args)
    ref = resolve_model(cfg)
    plan = make_plan(cfg, dates, ref)
    run_id = runs.new_run_id()
    if plan.to_read:
        acquire_tranches(cfg, plan, ref, run_id)
    if not plan.chunks:  # everything skipped, busy or missing: no run to start
        return RunOutcome(run_id="", summary=None, wall_seconds=0.0, plan=plan, ref=ref)
    start_run(cfg, ref, run_id)
    _LOG.info("run %s: model %s:%s, %d tranche(s), %d chunk(s)", run_id, ref.name,
              ref.version, len(plan.to_read), len(plan.chunks))
    started = time.monotonic()
    p = test_pipeline or make_pipeline(cfg, beam_args, server)
    keeper = LeaseKeeper(cfg, run_id)
    keeper.start()
    try:
        build_pipeline(p, cfg, plan, ref, run_id, sink)
        if server is not None:
            server.wait_ready()  # the graph was built while its imports finished
        result = p.run()
        if wait:
            result.wait_until_finish()
    except BaseException as exc:
        fail_run(cfg, run_id, f"{type(exc).__name__}: {exc}")
        raise
    finally:
        keeper.stop()
    wall = time.monotonic() - started
    return RunOutcome(run_id=run_id, summary=run_summary(cfg, run_id) if wait else None,
                      wall_seconds=wall, plan=plan, ref=ref,
                      model_loads=model_loads(result) if wait else None)


def model_loads(result: Any) -> int | None:
    """How many times workers loaded the model (RunInference's load-latency samples)."""
    from apache_beam.metrics.metric import MetricsFilter

    try:
        found = result.metrics().query(
            MetricsFilter().with_name("load_model_latency_milli_secs"))["distributions"]
    except Exception:  # noqa: BLE001 - a runner without metrics support
        return None
    return sum(d.committed.count for d in found if d.committed is not None)
