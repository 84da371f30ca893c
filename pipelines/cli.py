"""The ``beamscore`` command line: train, models, score, plan, runs, triggers, report, db.

Each command lives in ``pipelines.commands``: a module adds its arguments (only the
config keys it uses) and names its handler with ``set_defaults(handler=...)``; ``main``
parses the command line once and calls that handler. A command's module is imported
only when that command is named, so ``beamscore --help`` loads neither Beam nor the
models; a command that imports more when it runs names those modules in ``preload``
(``set_defaults``), so the console script imports them during its start-up too
(``engine.startup``). Exit codes are listed in ``pipelines.orchestration.exit_codes``.
Tranches the ledger already completed with the same inputs and model version are
skipped (exit 0); ``--force`` rescores them.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import importlib
import logging
import os
import sys
import threading
from collections.abc import Iterator
from typing import Any, cast

from engine import allocator
from engine.beam_import import skip_unused_connectors
from engine.math_threads import limit_math_threads
from engine.startup import start_up
from pipelines.configuration.parser import ArgumentParser
from pipelines.orchestration.logs import setup_logging

DESCRIPTION = ("Batch scoring with scikit-learn models on Apache Beam: train and register "
               "models, score daily tranches, inspect runs. 'beamscore COMMAND --help' "
               "lists a command's options.")
# name -> (one line of help, "module:function" that adds the command's arguments)
COMMANDS = {
    "train": ("fit the default recipe and register a version",
              "pipelines.commands.model_commands:add_train_arguments"),
    "models": ("model registry: register, list, promote",
               "pipelines.commands.model_commands:add_models_arguments"),
    "score": ("score tranches", "pipelines.commands.score_commands:add_score_arguments"),
    "plan": ("list what score would read; runs nothing",
             "pipelines.commands.score_commands:add_plan_arguments"),
    "runs": ("runs recorded in the database: list, show, release",
             "pipelines.commands.runs:add_runs_arguments"),
    "triggers": ("retraining requests recorded in the database",
                 "pipelines.commands.tracking_commands:add_triggers_arguments"),
    "report": ("write a run's HTML report from its monitoring rows",
               "pipelines.commands.tracking_commands:add_report_arguments"),
    "db": ("database administration: init",
           "pipelines.commands.db_commands:add_db_arguments"),
}


class _Commands(argparse._SubParsersAction):  # type: ignore[type-arg]
    """Subcommands whose arguments are added when the command is named (or when
    ``build`` is called): the top-level help needs only their names."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pending: dict[str, str] = {}

    def add_command(self, name: str, help: str, builder: str) -> None:
        self.add_parser(name, help=help, description=help[0].upper() + help[1:] + ".")
        self._pending[name] = builder

    def build(self, name: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = self.choices[name]
        builder = self._pending.pop(name, None)
        if builder is not None:
            module, _, function = builder.partition(":")
            getattr(importlib.import_module(module), function)(parser)
        return parser

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        if values and values[0] in self.choices:
            self.build(values[0])
        super().__call__(parser, namespace, values, option_string)


def build_parser(lazy: bool = False) -> argparse.ArgumentParser:
    """The whole command line; with ``lazy``, a command's arguments are added only
    once it is named on the command line being parsed."""
    parser = ArgumentParser(prog="beamscore", description=DESCRIPTION)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = cast(_Commands, parser.add_subparsers(dest="command", required=True,
                                                metavar="COMMAND", action=_Commands))
    for name, (text, builder) in COMMANDS.items():
        sub.add_command(name, text, builder)
        if not lazy:
            sub.build(name)
    return parser


def main(argv: list[str] | None = None, *, owns_process: bool = False) -> int:
    """Parse ``argv`` and run the named command; its exit code. ``owns_process`` (the
    console script): the command's modules, and the ones it names in ``preload``, are
    imported under ``engine.startup.start_up`` (a library caller's objects are never
    frozen)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    with _quiet_when_stdout_closes():
        with start_up() if owns_process else contextlib.nullcontext():
            parser = build_parser(lazy=True)
            args, extra = parser.parse_known_args(argv)
            for module in getattr(args, "preload", ()):
                importlib.import_module(module)
        if extra and not getattr(args, "takes_beam_args", False):
            from pipelines.orchestration.run_arguments import unrecognized

            parser.error(f"unrecognized arguments: {unrecognized(extra, parser)}")
        args.beam_args = extra
        setup_logging(args.verbose)
        from pipelines.orchestration.exit_codes import guarded

        return guarded(lambda: int(args.handler(args)))


class _ClosedPipeProof:
    """Standard output that stops writing, quietly, once its reader has gone (a pipe
    into ``head``): the rest of the output goes to /dev/null and the command ends with
    its own exit code. Everything but ``write`` and ``flush`` (``fileno``, ``isatty``,
    ``encoding`` ...) is the real stream's."""

    def __init__(self, stream: Any):
        self._stream = stream

    def write(self, text: str) -> int:
        with self._closed_pipe_is_quiet():
            self._stream.write(text)
        return len(text)

    def flush(self) -> None:
        with self._closed_pipe_is_quiet():
            self._stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    @contextlib.contextmanager
    def _closed_pipe_is_quiet(self) -> Iterator[None]:
        try:
            yield
        except BrokenPipeError:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)


@contextlib.contextmanager
def _quiet_when_stdout_closes() -> Iterator[None]:
    stdout = sys.stdout
    sys.stdout = _ClosedPipeProof(stdout)  # type: ignore[assignment]
    try:
        yield
    finally:
        sys.stdout = stdout


def reference() -> str:
    """The CLI reference page (docs/cli.md): every command's usage and help, as the
    parser prints it at a fixed width."""
    lines = ["# CLI reference", "",
             "Generated from the parser (`pipelines.cli.reference`); "
             "`tests/pipelines/test_cli_help.py` fails when it differs. Exit codes: see "
             "`pipelines/orchestration/exit_codes.py`.", ""]
    for path, parser in _all_parsers(build_parser(), "beamscore"):
        parser.formatter_class = lambda prog: argparse.HelpFormatter(prog, width=96)
        lines += [f"## {path}", "", "```text", parser.format_help().rstrip(), "```", ""]
    return "\n".join(lines)


def _all_parsers(parser: argparse.ArgumentParser, path: str
                 ) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _all_parsers(child, f"{path} {name}")


def console_main() -> None:
    """The ``beamscore`` console script: ``main``, then a fast exit.

    Tearing down an interpreter that holds Beam, pandas, pyarrow and scikit-learn takes
    a noticeable fraction of a second (module and object deallocation) and changes
    nothing on disk. Once ``main`` has returned, and only if no other non-daemon thread
    is still running, the atexit handlers run, the output streams and logging are
    flushed, and the process exits with ``os._exit``. Library callers and tests call
    ``main`` and keep the normal shutdown.

    Before that, the math libraries are limited to one thread each
    (``engine.math_threads``: set before numpy loads, inherited by every process of the
    run), the process executes itself again, once, with glibc's allocator tuned for
    batch scoring (``engine.allocator``), and Beam, when a command imports it, comes
    without the connectors no run uses (``engine.beam_import``).
    """
    limit_math_threads()
    allocator.reexec()
    skip_unused_connectors()
    code = main(owns_process=True)
    if any(t.is_alive() and not t.daemon and t is not threading.main_thread()
           for t in threading.enumerate()):
        sys.exit(code)
    atexit._run_exitfuncs()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    console_main()
