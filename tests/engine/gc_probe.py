"""Imported by a test's fork server as a preload module: records the garbage
collector's state during the preload and in each worker the zygote forks, as one JSON
line per event in the file named by ``BEAMSCORE_GC_PROBE``."""

from __future__ import annotations

import gc
import json
import os


def _record(event: str) -> None:
    with open(os.environ["BEAMSCORE_GC_PROBE"], "a") as fh:
        fh.write(json.dumps({"event": event, "pid": os.getpid(), "enabled": gc.isenabled(),
                             "frozen": gc.get_freeze_count()}) + "\n")


_record("preload")
os.register_at_fork(after_in_child=lambda: _record("forked"))
