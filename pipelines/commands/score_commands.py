"""``beamscore score`` and ``beamscore plan``: the same arguments (dates, ``--force``,
every config key), parsed once. ``score`` hands them to
``pipelines.orchestration.score.run_parsed``; ``plan`` prints what a run would read."""

from __future__ import annotations

import argparse

from pipelines.orchestration.run_arguments import (
    SCORE_DESCRIPTION,
    add_run_arguments,
    check_run_arguments,
    requested_dates,
)


def add_score_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = SCORE_DESCRIPTION
    add_run_arguments(parser)
    parser.set_defaults(handler=score, takes_beam_args=True, command_parser=parser,
                        preload=("pipelines.orchestration.score",))


def score(args: argparse.Namespace) -> int:
    """``args.beam_args``: what the parser left to Beam."""
    from pipelines.orchestration.score import run_parsed

    check_run_arguments(args.command_parser, args, args.beam_args)
    return run_parsed(args.command_parser, args, args.beam_args)


def add_plan_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("List the tranches score would read, each with the ledger's "
                          "decision; runs nothing and writes nothing.")
    add_run_arguments(parser, beam=False)
    parser.set_defaults(handler=plan, command_parser=parser)


def plan(args: argparse.Namespace) -> int:
    import dataclasses

    from models.registry import ModelRegistry
    from pipelines.commands.common import command_config
    from pipelines.configuration.config import settings_of
    from pipelines.orchestration.exit_codes import EXIT_BUSY, EXIT_MISSING, EXIT_OK
    from pipelines.orchestration.launch import model_fields, require_model
    from pipelines.orchestration.options import RunnerSettings, check_placeholders
    from pipelines.orchestration.plan import PlanSettings, make_plan
    from pipelines.orchestration.summary import format_plan
    from store.ledger import BUSY

    check_run_arguments(args.command_parser, args)
    cfg = command_config(args)
    check_placeholders(settings_of(RunnerSettings, cfg), [], ("input_root", "registry", "db"))
    ref = ModelRegistry(cfg.registry).resolve(require_model(cfg.model))
    cfg = dataclasses.replace(cfg, fields=model_fields(cfg.fields, cfg.explicit_keys, ref))
    found = make_plan(settings_of(PlanSettings, cfg), requested_dates(args, cfg.schedule.timezone),
                      ref, read_only=True)
    print(format_plan(found, f"{ref.name}:{ref.version}"))
    if found.missing or found.empty:
        return EXIT_MISSING
    return EXIT_BUSY if found.with_decision(BUSY) else EXIT_OK
