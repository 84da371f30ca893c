"""One ``--flag`` per config key, with one line of help each, grouped by config section
in ``--help`` (the top-level keys under "configuration", then "fields", "sink" ...),
and the overrides the flags given make."""

from __future__ import annotations

import argparse
from typing import Any

from pipelines.configuration.config import KEYS, SECTIONS

REFERENCE = "docs/configuration.md"


def add_config_flags(parser: argparse.ArgumentParser, skip: set[str] = frozenset()) -> None:  # type: ignore[assignment]
    """Add ``--config`` and one flag per config leaf (default None = not given), in one
    argument group per section."""
    groups = {"": parser.add_argument_group(
        "configuration", f"flags override the config keys in brackets ({REFERENCE})")}
    groups[""].add_argument(
        "--config", metavar="NAME_OR_FILE",
        help="overlay: local (default), dataflow or a YAML file")
    for section in SECTIONS:  # a section none of whose keys the command takes is not shown
        if any(k.section == section.name and k.name not in skip for k in KEYS):
            groups[section.name] = parser.add_argument_group(section.name, section.help)
    for key in KEYS:
        if key.name in skip:
            continue
        groups[key.section].add_argument(
            key.flag, dest=f"cfg:{key.name}", default=None, metavar=key.metavar,
            help=f"{key.help} [{key.name}]")


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    return {
        k[len("cfg:"):]: v for k, v in vars(args).items() if k.startswith("cfg:") and v is not None
    }
