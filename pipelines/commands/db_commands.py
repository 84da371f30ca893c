"""``beamscore db init``: create or migrate the schema ahead of a run (a run does it
too, at launch); reads ``--config`` and the database flags only."""

from __future__ import annotations

import argparse

from pipelines.commands.common import SESSION_KEYS, add_config_keys, command_config
from pipelines.orchestration.exit_codes import EXIT_OK


def add_db_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="db_command", required=True, metavar="COMMAND")
    init = sub.add_parser("init", help="create or migrate the schema ahead of a run",
                          description="Create or migrate the schema ahead of a run.")
    add_config_keys(init, SESSION_KEYS)
    init.set_defaults(handler=init_schema)


def init_schema(args: argparse.Namespace) -> int:
    from pipelines.configuration.connection import opened
    from store.database import redact

    cfg = command_config(args)
    with opened(cfg.database, migrate=True):
        pass
    print(f"schema ready in {redact(cfg.db)}")
    return EXIT_OK
