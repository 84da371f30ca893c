"""``beamscore report RUN_ID`` (a run's HTML report, from its monitoring rows) and
``beamscore triggers list`` (the ``retrain_triggers`` table: every retraining request
and what became of its command)."""

from __future__ import annotations

import argparse

from pipelines.commands.common import (
    SESSION_KEYS,
    add_config_keys,
    command_config,
)
from pipelines.orchestration.exit_codes import EXIT_OK


def add_report_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "Write a run's HTML report from its monitoring rows."
    parser.add_argument("run_id", help="the run")
    parser.add_argument("--output", metavar="FILE.html",
                        help="where to write it; a folder: RUN_ID.html in it (default "
                             "<output_dir>/_reports/RUN_ID.html)")
    add_config_keys(parser, (*SESSION_KEYS, "output_dir", "tracking.report_runs"))
    parser.set_defaults(handler=report)


def report(args: argparse.Namespace) -> int:
    from pipelines.orchestration.report import write_report

    cfg = command_config(args)
    print(write_report(cfg.database, cfg.output_dir, cfg.tracking.report_runs, args.run_id,
                       args.output))
    return EXIT_OK


def add_triggers_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="triggers_command", required=True, metavar="COMMAND")
    ls = sub.add_parser("list", help="retraining requests, oldest first",
                        description="Retraining requests (the retrain_triggers table), "
                                    "oldest first: the model version, the runs and reasons "
                                    "behind each, its status and its command's exit code.")
    ls.add_argument("--model", dest="model_name", metavar="NAME",
                    help="only this model's requests")
    add_config_keys(ls, SESSION_KEYS)
    ls.set_defaults(handler=list_triggers)


def list_triggers(args: argparse.Namespace) -> int:
    from pipelines.configuration.connection import open_existing
    from store import monitoring

    db = open_existing(command_config(args).database, table="retrain_triggers")
    try:
        found = monitoring.triggers(db, args.model_name) if db is not None else []
    finally:
        if db is not None:
            db.close()
    lines = [f"{'TRIGGER':<26}{'CREATED':<31}{'MODEL':<20}{'STATUS':<19}{'EXIT':>5}  REASONS"]
    for t in found:
        code = "" if t.command_exit_code is None else str(t.command_exit_code)
        lines.append(f"{t.trigger_id:<26}{t.created_at:<31}"
                     f"{t.model_name + ':' + t.model_version:<20}{t.status:<19}{code:>5}  "
                     + "; ".join(t.reasons))
        lines.append(f"{'':<26}runs {', '.join(t.run_ids)}")
    print("\n".join(lines))
    return EXIT_OK
