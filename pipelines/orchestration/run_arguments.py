"""The arguments of ``beamscore score`` and ``beamscore plan``: the tranche dates,
``--force`` and every config key; which tranches they name; the usage checks the
parser cannot make alone (a range's order, a Beam argument's form).

Kept apart from ``pipelines.orchestration.score`` so that ``plan``, the template entry's
parameter list and ``--help`` do not import the pipeline.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
from zoneinfo import ZoneInfo

from landing.tranches import date_range
from pipelines.configuration.config import ConfigError
from pipelines.configuration.flags import add_config_flags
from pipelines.configuration.parser import ArgumentParser

SCORE_DESCRIPTION = ("Score tranches; flags beamscore does not know are passed to Beam "
                     "(--runner, --project, --temp_location ...).")


def _date(text: str) -> dt.date:
    """A day written YYYY-MM-DD, as tranche folders are named (``dt=YYYY-MM-DD``)."""
    try:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            raise ValueError(text)
        return dt.date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from exc


def add_run_arguments(parser: argparse.ArgumentParser, beam: bool = True) -> None:
    """The arguments ``score`` (``beam``: and Beam's options) and ``plan`` share:
    dates, --force, every config key."""
    indent = " " * len(f"usage: {parser.prog} ")
    parser.usage = (f"{parser.prog} [-h] [--date DATE | --from DATE --to DATE] [--force [BOOL]]\n"
                    f"{indent}[--config NAME_OR_FILE] [CONFIG FLAG ...]"
                    + (" [BEAM OPTION ...]" if beam else ""))
    when = parser.add_mutually_exclusive_group()
    when.add_argument("--date", type=_date, metavar="DATE",
                      help="one tranche (default: yesterday in schedule.timezone)")
    when.add_argument("--from", dest="date_from", type=_date, metavar="DATE",
                      help="first tranche of a range")
    parser.add_argument("--to", dest="date_to", type=_date, metavar="DATE",
                        help="last tranche of a range")
    parser.add_argument("--force", dest="cfg:force", nargs="?", const="true", default=None,
                        metavar="BOOL", help="rescore tranches the ledger has completed")
    add_config_flags(parser, skip={"force"})


def check_run_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace,
                        beam_args: list[str] | None = None) -> None:
    """Exit 2 (usage) for a range that ends before it starts, or for a leftover
    argument that cannot be a Beam option (one dash: Beam's options have two)."""
    bad = [a for a in beam_args or [] if a.startswith("-") and not a.startswith("--")]
    if bad:
        parser.error(f"unrecognized arguments: {' '.join(bad)}")
    if bool(args.date_from) != bool(args.date_to):
        parser.error("--from and --to go together")
    if args.date_from and args.date_to and args.date_to < args.date_from:
        parser.error(f"--to {args.date_to} is before --from {args.date_from}")


def requested_dates(args: argparse.Namespace, timezone: str = "UTC",
                    now: dt.datetime | None = None) -> list[dt.date]:
    """The tranches to score: ``--date``, ``--from``..``--to``, or yesterday in
    ``timezone`` (``schedule.timezone``)."""
    if args.date_from or args.date_to:
        if not (args.date_from and args.date_to):
            raise ConfigError("--from and --to go together")
        return date_range(args.date_from, args.date_to)
    if args.date:
        return [args.date]
    today = (now or dt.datetime.now(dt.timezone.utc)).astimezone(ZoneInfo(timezone)).date()
    return [today - dt.timedelta(days=1)]


def score_parser() -> argparse.ArgumentParser:
    """``beamscore score``'s own parser, as the template entry parses its arguments."""
    parser = ArgumentParser(prog="beamscore score", description=SCORE_DESCRIPTION)
    add_run_arguments(parser)
    return parser


def parse_score_args(argv: list[str] | None) -> tuple[argparse.ArgumentParser,
                                                      argparse.Namespace, list[str]]:
    """(parser, ``score``'s arguments, the rest for Beam), usage checked."""
    parser = score_parser()
    args, beam_args = parser.parse_known_args(argv)
    check_run_arguments(parser, args, beam_args)
    return parser, args, beam_args


def unrecognized(extra: list[str], *parsers: argparse.ArgumentParser,
                 known: set[str] | None = None) -> str:
    """``extra``, the arguments no parser took, as a usage error shows them: any URL
    redacted, and after a mistyped flag the option of ``parsers`` (their subcommands
    too) or of ``known`` it most likely meant."""
    import difflib

    from store.database import redact_text  # an argument may be a URL with a secret

    options = set(known or ())
    for parser in parsers:
        options |= _option_strings(parser)
    shown = []
    for arg in extra:
        name = arg.split("=", 1)[0]
        near = difflib.get_close_matches(name, options, n=1, cutoff=0.8) \
            if name.startswith("--") and name not in options else []
        shown.append(redact_text(arg) + (f" (did you mean {near[0]}?)" if near else ""))
    return " ".join(shown)


def _option_strings(parser: argparse.ArgumentParser) -> set[str]:
    """The long options of ``parser`` and of its subcommands' parsers built so far."""
    found = {s for s in parser._option_string_actions if s.startswith("--")}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found |= _option_strings(sub)
    return found
