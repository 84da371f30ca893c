"""The parser of every command line (subcommands included): options by their exact
names, usage errors without secrets."""

from __future__ import annotations

import argparse
from typing import Any, NoReturn


class ArgumentParser(argparse.ArgumentParser):
    """Options are taken by their exact names only (argparse would take ``--batch`` for
    ``--batch-size``, and a Beam option for a beamscore one it prefixes), and a usage
    error has any URL's password redacted (argparse quotes the argument it could not
    take: ``--date=postgresql://user:secret@host/db``). Subcommands' parsers are of
    this class too (argparse makes them of their parent's)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        from store.database import redact_text  # imported when there is an error to show

        super().error(redact_text(message))
