"""Exit codes of ``beamscore``: a contract with schedulers and scripts.

0 success; 1 launch or configuration error, or a role, password or database the
database server refuses (the message names the key, file, model, role or database,
never a password); 2 usage error; 3 a requested tranche is missing, or empty (files that hold no
record, unless ``allow_empty_tranches``; the others are still scored); 4 the
dead-letter share exceeded ``max_dead_letter_ratio``; 5 a tranche is being scored by
another run (lease held, or lost to a run that took it over; the others are still
scored); 6 the run succeeded and tracking requested retraining (a ``retrain_triggers``
row was written); 75 (EX_TEMPFAIL) the database stayed unreachable for
``sink.connect_timeout_seconds`` (transient: retry later). When several apply, the
first of 1, 4, 3, 5, 6 is the exit code (a run that lost its leases exits 5).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from models.registry import RegistryError
from pipelines.configuration.config import ConfigError
from store.database import AccessDenied, TransientDatabaseError

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_MISSING, EXIT_DEAD_LETTERS, EXIT_BUSY = 0, 1, 2, 3, 4, 5
EXIT_RETRAIN = 6
EXIT_TEMPFAIL = 75  # sysexits.h EX_TEMPFAIL: a transient failure, retry later
_LOG = logging.getLogger("beamscore")


class LaunchError(Exception):
    """The run cannot start: missing model, bad checksum, no input. Message says why."""


class UsageError(Exception):
    """The command line (with its config) lacks something it must give: exit 2."""


def guarded(command: Callable[[], int]) -> int:
    """Run ``command``; an error becomes one ``beamscore: error:`` line and exit 1, or
    exit 2 for a ``UsageError``, exit 75 for a database that stayed unreachable
    (``TransientDatabaseError``)."""
    try:
        return command()
    except TransientDatabaseError as exc:
        print(f"beamscore: error: database unreachable, retry later (exit {EXIT_TEMPFAIL}): "
              f"{str(exc)[:2000]}", file=sys.stderr)
        return EXIT_TEMPFAIL
    except UsageError as exc:
        print(f"beamscore: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (ConfigError, RegistryError, LaunchError, FileNotFoundError, ValueError,
            AccessDenied) as exc:
        print(f"beamscore: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:  # noqa: BLE001 - a failed pipeline: the run is marked failed
        _LOG.debug("run failed", exc_info=True)
        print(f"beamscore: error: run failed: {type(exc).__name__}: {str(exc)[:2000]}",
              file=sys.stderr)
        return EXIT_ERROR
