"""The Flex Template's parameters, derived from the entry's options and the config schema.

Every option of the entry (``beamscore score``'s) is either a template parameter or
hidden: a config key is a parameter unless its schema metadata says ``"template":
False`` (``pipelines.configuration.schema``), and its label, regex and note come from
that same declaration; the entry's own options (dates, ``config``) are described in
``ENTRY``. ``deploy/flex-template/metadata.json`` is this module's output, and a test
fails when the committed file differs::

    python -m pipelines.template_metadata > deploy/flex-template/metadata.json
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from typing import Any

from pipelines.configuration.config import KEYS
from pipelines.orchestration.score import score_parser

NAME = "beamscore"
DESCRIPTION = (
    "Batch scoring of daily document tranches (<input_root>/dt=YYYY-MM-DD) with a versioned "
    "scikit-learn model from the registry; predictions to PostgreSQL and Parquet, every bad "
    "record to the dead letters. Unset parameters take the values of the bundled dataflow "
    "config overlay.")
_DATE = "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
# The entry's options that are not config keys: (label, regex, note, metavar).
ENTRY: dict[str, tuple[str, str, str, str]] = {
    "date": ("Tranche date", _DATE, "", "YYYY-MM-DD"),
    "from": ("First tranche date of a range", _DATE, "Use with to; not with date.",
             "YYYY-MM-DD"),
    "to": ("Last tranche date of a range", _DATE, "Use with from.", "YYYY-MM-DD"),
    "config": ("Config overlay", "^(dataflow|/[^ ,]+[.]ya?ml)$",
               "In the template the default is dataflow; a YAML file must be a path in the "
               "image.", "dataflow|/PATH.yaml"),
}


@dataclass(frozen=True)
class Parameter:
    name: str
    flag: str
    label: str
    help: str
    regex: str
    metavar: str

    def as_metadata(self) -> dict[str, Any]:
        return {"name": self.name, "label": self.label, "helpText": self.help,
                "isOptional": True, "regexes": [self.regex]}


def _options() -> list[tuple[str, str, argparse.Action]]:
    """(template name, flag, action) of every option of the entry, in order."""
    return [(flag[2:].replace("-", "_"), flag, action)
            for action in score_parser()._actions for flag in action.option_strings
            if flag.startswith("--") and flag != "--help"]


def options() -> dict[str, str]:
    """Every option of the entry point: template name -> ``beamscore score`` flag."""
    return {name: flag for name, flag, _ in _options()}


def _parameter(name: str, flag: str, action: argparse.Action) -> Parameter | None:
    by_key = {k.name: k for k in KEYS}
    if action.dest.startswith("cfg:"):
        key = by_key[action.dest[len("cfg:"):]]
        if not key.template:
            return None
        if not (key.label and key.regex):
            raise ValueError(f"config key '{key.name}' is a template parameter: its schema "
                             "metadata needs a 'label' (and a 'regex' for a str or list)")
        label, regex, note, metavar = key.label, key.regex, key.note, key.metavar
    else:
        label, regex, note, metavar = ENTRY[name]
    text = action.help or ""
    return Parameter(name, flag, label, f"{text}. {note}" if note else text, regex, metavar)


def parameters() -> list[Parameter]:
    """The template's parameters, in the order of the entry's options."""
    found = (_parameter(name, flag, action) for name, flag, action in _options())
    return [p for p in found if p is not None]


def hidden() -> set[str]:
    """Options of the entry that the template deliberately does not offer."""
    return set(options()) - {p.name for p in parameters()}


def metadata() -> dict[str, Any]:
    return {"name": NAME, "description": DESCRIPTION, "streaming": False,
            "parameters": [p.as_metadata() for p in parameters()]}


def metadata_json() -> str:
    """deploy/flex-template/metadata.json, byte for byte."""
    return json.dumps(metadata(), indent=2) + "\n"


if __name__ == "__main__":
    print(metadata_json(), end="")
