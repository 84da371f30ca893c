"""Imported by a test's fork server as a preload module: records, in each worker the
zygote forks, its scheduling policy and slice request, as one JSON line per worker in
the file named by ``BEAMSCORE_SCHED_PROBE``."""

from __future__ import annotations

import json
import os

from engine.scheduling import slice_request


def _record() -> None:
    with open(os.environ["BEAMSCORE_SCHED_PROBE"], "a") as fh:
        fh.write(json.dumps({"pid": os.getpid(), "policy": os.sched_getscheduler(0),
                             "slice": slice_request()}) + "\n")


os.register_at_fork(after_in_child=_record)
