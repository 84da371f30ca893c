"""Imported by a test's fork server as a preload module: records, in each worker the
zygote forks, whether Beam's introspection goes through ``engine.construction``'s
caches, as one JSON line per worker in the file named by
``BEAMSCORE_CONSTRUCTION_PROBE``."""

from __future__ import annotations

import json
import os

from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.transforms import core, userstate

from engine import construction


def _record() -> None:
    memoized = (PipelineOptions.view_as is construction._view_as
                and userstate.get_dofn_specs is construction._get_dofn_specs
                and core.get_function_args_defaults is construction._args_defaults)
    with open(os.environ["BEAMSCORE_CONSTRUCTION_PROBE"], "a") as fh:
        fh.write(json.dumps({"pid": os.getpid(), "memoized": memoized}) + "\n")


os.register_at_fork(after_in_child=_record)
