"""The local runner of a run whose SDK workers come from the fork server.

``ForkServerRunner`` is Beam's ``FnApiRunner`` with the fork server's environment. The
zygote's imports (scikit-learn above all) take longer than the launcher's work from the
fork server's start to the run; part of that work is inside ``run()`` itself:
translating the pipeline to its runner API proto (0.1 to 0.4 s for beamscore's graph),
validating and fusing it. This runner waits for the zygote only once the stages are
about to run, right before it starts the workers, so that work overlaps the zygote's
imports instead of following them. A zygote that cannot start fails the run with the
fork server's own error (``ForkServer.wait_ready``).
"""

from __future__ import annotations

from typing import Any

from apache_beam.runners.portability.fn_api_runner import fn_runner

from engine.forkserver import ForkServer


class ForkServerRunner(fn_runner.FnApiRunner):  # type: ignore[misc]
    """``FnApiRunner`` on ``server``'s workers, waiting for its zygote at the last moment."""

    def __init__(self, server: ForkServer):
        super().__init__(default_environment=server.environment())
        self._server = server

    def run_stages(self, stage_context: Any, stages: Any) -> Any:
        self._server.wait_ready()
        return super().run_stages(stage_context, stages)
