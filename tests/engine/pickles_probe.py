"""Imported by a test's fork server as a preload module: records, in each worker the
zygote forks, whether Beam's worker modules pickle their operation specs through
``engine.pickles``, as one JSON line per worker in the file named by
``BEAMSCORE_PICKLES_PROBE``."""

from __future__ import annotations

import json
import os

from apache_beam.runners.worker import bundle_processor, operations

from engine import pickles


def _record() -> None:
    plain = all(isinstance(m.pickler, pickles._PlainPickler)
                for m in (bundle_processor, operations))
    with open(os.environ["BEAMSCORE_PICKLES_PROBE"], "a") as fh:
        fh.write(json.dumps({"pid": os.getpid(), "plain": plain}) + "\n")


os.register_at_fork(after_in_child=_record)
