"""Logging for the command line: beamscore's lines, Beam's warnings, workers' lines.

Local worker processes send their logs to the launcher, which re-logs each entry as
protobuf text; ``worker_log_filter`` keeps the ones beamscore's own code logged, as
``worker: <message>``, and Beam's worker chatter only when it is a warning.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import warnings

from pipelines.orchestration.signals import Interrupted

WORKER_LOGGER = "apache_beam.runners.portability.local_job_service"
_OWN_CODE = re.compile(
    r'log_location: "[^"]*/(?:transforms|models|pipelines|store|landing|engine)/[^"]*"')
_MESSAGE = re.compile(r'message: "((?:[^"\\]|\\.)*)"')
_HARMLESS = (
    # RunInference asks for process memory on every load; harmless where unsupported.
    "Resource module is not available",
    # FnApiRunner's advice for its own modes; the fork server provides the workers.
    "direct_running_mode should be `multi_processing`",
    # Local workers have no semi-persistent directory; nothing of ours needs one.
    "No semi_persistent_directory found",
)


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    # A path holding "[" is matched literally as the pattern "[[]" (glob.escape), which
    # Python's re warns about inside Beam's pattern translation; the match is right.
    warnings.filterwarnings("ignore", message="Possible nested set", category=FutureWarning,
                            module="apache_beam.io.filesystem")
    if verbose:
        return
    logging.getLogger("apache_beam").setLevel(logging.WARNING)
    forwarded = logging.getLogger(WORKER_LOGGER)
    forwarded.setLevel(logging.INFO)
    if worker_log_filter not in forwarded.filters:
        forwarded.addFilter(worker_log_filter)
    for handler in logging.getLogger().handlers:
        if drop_harmless not in handler.filters:
            handler.addFilter(drop_harmless)


def worker_log_filter(record: logging.LogRecord) -> bool:
    """Keep forwarded worker lines logged by beamscore's code, as ``worker: <message>``."""
    text = record.getMessage()
    if not text.startswith("Worker: "):
        return True
    own = _OWN_CODE.search(text)
    if not own and record.levelno < logging.WARNING:
        return False
    match = _MESSAGE.search(text)
    if match:
        record.msg, record.args = "worker: %s", (match.group(1).encode().decode(
            "unicode_escape", errors="replace"),)
    return True


def drop_harmless(record: logging.LogRecord) -> bool:
    """Drop the known-harmless lines, and Beam's report of a stop signal (the launcher
    says that in one line of its own)."""
    if record.exc_info and isinstance(record.exc_info[1], Interrupted):
        return False
    if record.levelno < logging.WARNING and record.name == "root" and \
            f"{os.sep}apache_beam{os.sep}" in record.pathname:
        return False  # Beam's portable runner logs its progress on the root logger
    message = record.getMessage()
    return not any(h in message for h in _HARMLESS) and "signals.Interrupted" not in message
