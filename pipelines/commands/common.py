"""What the commands share: the config flags a command offers (the sections it uses,
not every key), the config those flags and ``--config`` make, and the usual sets of
keys."""

from __future__ import annotations

import argparse
from collections.abc import Iterable

from pipelines.configuration.config import LEAVES, Config, load_config
from pipelines.configuration.flags import add_config_flags, overrides_from_args

# The keys a command that reads the database needs (``pipelines.configuration.connection``
# waits ``sink.connect_timeout_seconds`` for one that is down: set in the config); one
# that writes to it as a run does also takes that wait and the statement timeout.
DATABASE_KEYS = ("db", "sink.password_env")
SESSION_KEYS = (*DATABASE_KEYS, "sink.connect_timeout_seconds", "sink.statement_timeout_ms")


def keys_of(*names: str) -> set[str]:
    """Config keys by name or by section: ``db`` is one key, ``preprocessing`` every
    key of that section."""
    return {key for key in LEAVES for name in names
            if key == name or key.startswith(name + ".")}


def add_config_keys(parser: argparse.ArgumentParser, keys: Iterable[str]) -> None:
    """``--config`` and the flags of ``keys`` only."""
    add_config_flags(parser, skip=set(LEAVES) - set(keys))


def command_config(args: argparse.Namespace) -> Config:
    """The config of ``--config`` and the config flags given."""
    return load_config(args.config, overrides_from_args(args))
