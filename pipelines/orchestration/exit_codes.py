"""Exit codes of ``beamscore``: a contract with schedulers and scripts.

0 success; 1 launch or configuration error, or a role, password or database the
database server refuses (the message names the key, file, model, role or database,
never a password); 2 usage error; 3 a requested tranche is missing, or empty (files
that hold no record, unless ``allow_empty_tranches``; the others are still scored); 4
the dead-letter share exceeded ``max_dead_letter_ratio``; 5 a tranche is being scored
by another run (lease held, or lost to a run that took it over; the others are still
scored), or the run was released by ``beamscore runs release`` while it ran; 6 the run
succeeded and tracking requested retraining (a ``retrain_triggers`` row was written);
75 (EX_TEMPFAIL) the database stayed unreachable for ``sink.connect_timeout_seconds``,
at launch or during the run, or a worker process was lost mid-run (killed by a signal,
e.g. the OOM killer's SIGKILL), or an input file changed while the run read it (its
tranche left failed) (transient: retry later); a worker that crashed (SIGSEGV, SIGBUS,
SIGABRT, SIGILL, SIGFPE: a fault in native code, which a retry meets again) is exit
1. When several apply, the first of 1, 75, 4, 3, 5, 6 is the exit code (a run that lost
its leases exits 5).
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Callable

from models.registry import RegistryError
from pipelines.configuration.config import ConfigError
from store.database import (
    AccessDenied,
    BadConnectionOptions,
    SchemaMismatch,
    TransientDatabaseError,
)

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_MISSING, EXIT_DEAD_LETTERS, EXIT_BUSY = 0, 1, 2, 3, 4, 5
EXIT_RETRAIN = 6
EXIT_TEMPFAIL = 75  # sysexits.h EX_TEMPFAIL: a transient failure, retry later
WORKER_LOST = "Channel closed prematurely"  # Beam's runner, when a worker's connection ends
_LOG = logging.getLogger("beamscore")


class LaunchError(Exception):
    """The run cannot start: missing model, bad checksum, no input. Message says why."""


class UsageError(Exception):
    """The command line (with its config) lacks something it must give: exit 2."""


def guarded(command: Callable[[], int]) -> int:
    """Run ``command``; an error becomes one ``beamscore: error:`` line and exit 1, or
    exit 2 for a ``UsageError``, exit 75 for a database that stayed unreachable
    (``TransientDatabaseError``, raised here or by a worker of the pipeline) or a worker
    lost mid-run (Beam's runner: ``WORKER_LOST``). A failed
    pipeline's error (a worker's traceback, as text) is told by its cause, the last
    exception line; the whole of it goes to the log."""
    try:
        return command()
    except TransientDatabaseError as exc:
        return _unreachable(str(exc))
    except UsageError as exc:
        print(f"beamscore: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (ConfigError, RegistryError, LaunchError, FileNotFoundError, ValueError,
            AccessDenied, BadConnectionOptions, SchemaMismatch) as exc:
        print(f"beamscore: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:  # noqa: BLE001 - a failed pipeline: the run is marked failed
        _LOG.debug("run failed", exc_info=True)
        cause = worker_cause(str(exc))
        if cause is None and WORKER_LOST in str(exc):
            return _worker_lost()
        if cause is None:
            print(f"beamscore: error: run failed: {type(exc).__name__}: {str(exc)[:2000]}",
                  file=sys.stderr)
            return EXIT_ERROR
        _LOG.info("the pipeline's error, as its worker raised it:\n%s", exc)
        kind, message = cause
        if kind in _transient():
            return _unreachable(message)
        print(f"beamscore: error: run failed: {kind.rpartition('.')[2]}: {message[:1000]}",
              file=sys.stderr)
        return EXIT_ERROR


def _worker_lost() -> int:
    """The one line of a run whose worker process went away: named by the signal that
    ended it where its fork server told (``engine.environment.worker_failures``). A
    crash (SIGSEGV ...) is exit 1, not retried; SIGKILL or an unknown end is exit 75."""
    from engine.environment import worker_failures
    from models.deadline import CRASH_SIGNALS, signal_words

    codes = worker_failures(wait=2.0)
    crashed = [-c for c in codes if c < 0 and -c in CRASH_SIGNALS]
    if crashed:
        print(f"beamscore: error: a worker process crashed mid-run ({signal_words(crashed[0])}"
              f": a fault in native code, the model's or a library's, not a lack of memory; "
              f"a retry would meet it again) (exit {EXIT_ERROR})", file=sys.stderr)
        return EXIT_ERROR
    signalled = [-c for c in codes if c < 0]
    how = signal_words(signalled[0]) if signalled else "killed, e.g. by the OOM killer"
    print(f"beamscore: error: a worker process was lost mid-run ({how}: {WORKER_LOST}); "
          f"retry later (exit {EXIT_TEMPFAIL})", file=sys.stderr)
    return EXIT_TEMPFAIL


def _unreachable(message: str) -> int:
    line = " ".join(message.split())  # one line: a server's DETAIL and HINT lines joined
    print(f"beamscore: error: database unreachable, retry later (exit {EXIT_TEMPFAIL}): "
          f"{line[:2000]}", file=sys.stderr)
    return EXIT_TEMPFAIL


def _transient() -> set[str]:
    """``TransientDatabaseError`` and its subclasses as a traceback names them
    (``module.Class``)."""
    def every(cls: type) -> list[type]:
        found, below = [cls], list[type](cls.__subclasses__())
        for kind in below:
            found += every(kind)
        return found

    return {f"{c.__module__}.{c.__qualname__}" for c in every(TransientDatabaseError)}


# How Python prints the exception line of a traceback: ``module.Class: message``.
_EXCEPTION_LINE = re.compile(r"^([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)(?:: (.*))?$")
_WHERE = re.compile(r" \[while running '[^']*'\]$")


def worker_cause(failure: str) -> tuple[str, str] | None:
    """The exception a pipeline's worker raised, from the text of the pipeline's error
    (Beam hands a worker's traceback to the launcher as the message of a
    ``RuntimeError``): its class, as Python prints it (``store.backends.base.
    TransientDatabaseError``), and its message (continuation lines joined, Beam's
    ``[while running ...]`` dropped); None for a message that holds no traceback."""
    _, marker, last = failure.rpartition("Traceback (most recent call last):")
    if not marker:
        return None
    lines = last.split("\n")[1:]
    # The frames are indented; the first line that is not is the exception's.
    start = next((i for i, line in enumerate(lines) if line and not line[0].isspace()), None)
    if start is None or not (found := _EXCEPTION_LINE.match(lines[start])):
        return None
    message = [found[2] or ""]
    for line in lines[start + 1:]:  # a message of several lines (a server's DETAIL: ...)
        if not line.strip():
            break
        message.append(line.strip())
    return found[1], _WHERE.sub("", " ".join(message)).strip()
