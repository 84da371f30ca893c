"""The configuration schema as data: one ``Key`` per config key, read off the dataclasses.

A config key is declared once, as a field of a section dataclass, and its field
metadata carries everything the flags, the reference page (docs/configuration.md) and
the Flex Template (deploy/flex-template/metadata.json) say about it::

    batch_rows: int = field(default=5_000, metadata={
        "help": "rows buffered per database write", "label": "Rows per database write"})

- ``help``: one line, shown by ``--help``, the reference page and the template.
- ``template``: False when the Flex Template does not offer the key as a parameter
  (absent: it does). On a section field of ``Config`` it hides the whole section.
- ``min``, ``max`` (inclusive), ``above``, ``below`` (exclusive): the range of a
  number; every int and float key declares its lower bound. ``nonempty``: a str key
  that must not be empty, or a list whose items must not be. ``choices``: the values a
  str key may take. ``Key.problem`` is the one check of a value against these, made
  for every key whenever a config is loaded.
- ``label``, ``regex``, ``note``: for a template parameter, its label, the regex its
  value must match (default: derived from the type and range: a positive or
  non-negative integer, a non-negative number, one between 0 and 1; bool: true or
  false) and a sentence the template adds to the help.
- ``config``: False on a field that is not a config key at all.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any

METAVARS = {int: "N", float: "X", bool: "true|false", str: "TEXT", list[str]: "A,B"}
TYPE_NAMES = {int: "int", float: "float", bool: "bool", str: "str", list[str]: "list of str"}
_POSITIVE_INT, _NATURAL, _INT = "^[1-9][0-9]*$", "^(0|[1-9][0-9]*)$", "^-?(0|[1-9][0-9]*)$"
_NON_NEGATIVE, _UNIT, _NUMBER = ("^[0-9]+([.][0-9]+)?$", "^(0([.][0-9]+)?|1([.]0+)?)$",
                                 "^-?[0-9]+([.][0-9]+)?$")


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
    min: float | None = None
    max: float | None = None
    above: float | None = None
    below: float | None = None
    nonempty: bool = False
    choices: tuple[str, ...] = ()

    @property
    def allowed(self) -> str:
        """The values the key takes, in words (``>= 1``, ``> 0 and < 1``); "" for any
        value of its type."""
        if self.choices:
            return "one of " + ", ".join(self.choices)
        if self.nonempty:
            return "a list of non-empty names" if self.type == list[str] else "non-empty"
        bounds = [f"{op} {_number(v)}" for op, v in ((">=", self.min), (">", self.above),
                                                     ("<=", self.max), ("<", self.below))
                  if v is not None]
        return " and ".join(bounds)

    def problem(self, value: Any) -> str | None:
        """Why ``value`` (of the key's type) is not allowed, as the end of a sentence
        naming the key (``must be >= 1, got 0``); None when it is allowed."""
        if self.choices:
            ok = value in self.choices
        elif self.nonempty:
            ok = all(v.strip() for v in value) if isinstance(value, list) \
                else bool(value.strip())
        else:
            ok = ((self.min is None or value >= self.min)
                  and (self.above is None or value > self.above)
                  and (self.max is None or value <= self.max)
                  and (self.below is None or value < self.below))
        return None if ok else f"must be {self.allowed}, got {value!r}"

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


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _regex(tp: Any, meta: Any) -> str:
    """A template parameter's default regex: what its type and range allow, as far as a
    regex says it simply (the range itself is checked when the config is loaded)."""
    low = meta.get("min", meta.get("above"))
    if tp is bool:
        return "^(true|false)$"
    if tp is int:
        if low is None:
            return _INT
        return _POSITIVE_INT if low >= 1 or meta.get("above") == 0 else \
            (_NATURAL if low >= 0 else _INT)
    if tp is float:
        if low is None or low < 0:
            return _NUMBER
        return _UNIT if meta.get("max") == 1 else _NON_NEGATIVE
    return ""


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
            regex=meta.get("regex", _regex(tp, meta)), note=meta.get("note", ""),
            min=meta.get("min"), max=meta.get("max"), above=meta.get("above"),
            below=meta.get("below"), nonempty=meta.get("nonempty", False),
            choices=tuple(meta.get("choices", ()))))
    return out
