"""The configuration schema as data: one ``Key`` per config key, read off the dataclasses.

A config key is declared once, as a field of a section dataclass, and its field
metadata carries everything the flags, the reference page (docs/configuration.md) and
the Flex Template (deploy/flex-template/metadata.json) say about it::

    batch_rows: int = field(default=5_000, metadata={
        "help": "rows buffered per database write", "label": "Rows per database write"})

- ``help``: one line, shown by ``--help``, the reference page and the template.
- ``template``: False when the Flex Template does not offer the key as a parameter
  (absent: it does). On a section field of ``Config`` it hides the whole section.
- ``label``, ``regex``, ``note``: for a template parameter, its label, the regex its
  value must match (default for int: a positive integer, float: a non-negative number,
  bool: true or false) and a sentence the template adds to the help.
- ``config``: False on a field that is not a config key at all.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any

METAVARS = {int: "N", float: "X", bool: "true|false", str: "TEXT", list[str]: "A,B"}
TYPE_NAMES = {int: "int", float: "float", bool: "bool", str: "str", list[str]: "list of str"}
DEFAULT_REGEXES = {int: "^[1-9][0-9]*$", float: "^[0-9]+([.][0-9]+)?$",
                   bool: "^(true|false)$"}


@dataclass(frozen=True)
class Key:
    """One config key: ``name`` is dotted (``sink.batch_rows``); ``section`` is "" at
    the top level."""

    name: str
    section: str
    type: Any
    default: Any
    help: str
    template: bool
    label: str = ""
    regex: str = ""
    note: str = ""

    @property
    def flag(self) -> str:
        """``sink.max_rows_per_second`` -> ``--sink-max-rows-per-second``."""
        return "--" + self.name.replace(".", "-").replace("_", "-")

    @property
    def parameter(self) -> str:
        """The Flex Template parameter: ``sink.batch_rows`` -> ``sink_batch_rows``."""
        return self.name.replace(".", "_")

    @property
    def metavar(self) -> str:
        return METAVARS.get(self.type, "VALUE")

    @property
    def type_name(self) -> str:
        return TYPE_NAMES.get(self.type, str(self.type))


@dataclass(frozen=True)
class Section:
    name: str
    help: str
    template: bool


def is_key(f: dataclasses.Field[Any]) -> bool:
    return bool(f.metadata.get("config", True))


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def _fields(cls: type) -> list[tuple[dataclasses.Field[Any], Any]]:
    hints = typing.get_type_hints(cls)
    return [(f, hints[f.name]) for f in dataclasses.fields(cls) if is_key(f)]


def sections(root: type) -> list[Section]:
    """The sections of ``root`` (its dataclass fields), in declaration order."""
    return [Section(f.name, f.metadata.get("help", ""), f.metadata.get("template", True))
            for f, tp in _fields(root) if dataclasses.is_dataclass(tp)]


def keys(cls: type, prefix: str = "", template: bool = True) -> list[Key]:
    """Every leaf key of ``cls``: the top-level keys, then each section's, in order."""
    out: list[Key] = []
    for f, tp in _fields(cls):
        meta = f.metadata
        exposed = template and meta.get("template", True)
        if dataclasses.is_dataclass(tp):
            out += keys(tp, f"{prefix}{f.name}.", exposed)  # type: ignore[arg-type]
            continue
        out.append(Key(
            name=prefix + f.name, section=prefix.rstrip("."), type=tp, default=_default(f),
            help=meta.get("help", ""), template=exposed, label=meta.get("label", ""),
            regex=meta.get("regex", DEFAULT_REGEXES.get(tp, "")), note=meta.get("note", "")))
    return out
