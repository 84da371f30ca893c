"""What follows a run's pipeline: tracking's launcher-side figures, a retraining request
(``pipelines.orchestration.retraining``) and the report (``pipelines.orchestration.report``).

The launcher does this after waiting for its job. A job staged for a Flex Template
launcher (``--template_location``) starts only once its launcher has exited, so that
job does it itself, as its last step (``FinishInJob``, added by ``pipelines.orchestration.graph``).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from dataclasses import dataclass
from typing import Any

from models.registry import ModelRef
from pipelines.configuration.config import TrackingConfig
from pipelines.orchestration.signals import deferred
from store.monitoring import Trigger
from store.session import DatabaseSettings

_LOG = logging.getLogger("beamscore")


def warm_up() -> threading.Thread:
    """Import what ``finish`` needs for a tracked run (scipy's statistics, matplotlib)
    and draw the report's first charts (``report_charts.warm_up``) in a daemon thread,
    started with the run: the launcher mostly waits (for the fork server's imports, then
    for its pipeline), so the run's end does not wait for them."""

    def imports() -> None:
        import scipy.stats  # noqa: F401

        from pipelines.orchestration import report_charts

        report_charts.warm_up()

    global _warming
    if _warming is not None and _warming.is_alive():  # one warm-up drawing at a time
        return _warming
    thread = threading.Thread(target=imports, name="beamscore-warm-up", daemon=True)
    thread.start()
    _warming = thread
    return thread


_warming: threading.Thread | None = None  # finish draws only once it has drawn


@dataclass(frozen=True)
class FinishSettings:
    """What finishing a run reads of the config (``settings_of(FinishSettings, cfg)``):
    the database, tracking's policy and where the report goes."""

    database: DatabaseSettings
    tracking: TrackingConfig
    output_dir: str


def finish(cfg: FinishSettings, ref: ModelRef, run_id: str, summary: dict[str, Any] | None,
           reference: dict[str, Any] | None, track: bool = True) -> tuple[Trigger | None, str]:
    """The run's retraining request (or None) and where its report was written ("" if
    it could not be); without ``track``, the report only (a run in waves tracked each
    wave as it ended: ``track_wave``)."""
    from pipelines.orchestration.report import write_report

    if _warming is not None:  # matplotlib draws in one thread at a time
        _warming.join()

    retrain = None
    with deferred():  # a stop signal now is raised once the report is written
        if track and cfg.tracking.enabled and summary:
            retrain = _after_run(cfg, ref, run_id, summary, reference)
        try:
            report = write_report(cfg.database, cfg.output_dir, cfg.tracking.report_runs,
                                  run_id)
        except Exception as exc:  # noqa: BLE001 - the run is done; its report is a courtesy
            _LOG.warning("could not write the report of run %s: %s", run_id, exc)
            report = ""
    return retrain, report


def _after_run(cfg: FinishSettings, ref: ModelRef, run_id: str, summary: dict[str, Any],
               reference: dict[str, Any] | None, tracking: TrackingConfig | None = None,
               decide: bool = True, done: set[str] | None = None) -> Trigger | None:
    from pipelines.orchestration.retraining import after_run

    try:
        return after_run(cfg.database, tracking or cfg.tracking, ref, run_id, summary,
                         reference, decide, done)
    except Exception as exc:  # noqa: BLE001 - the scores are written; say what is missing
        _LOG.error("run %s: tracking's launcher-side figures and retraining decision "
                   "failed (%s: %s); the run's scores and its pipeline figures stand",
                   run_id, type(exc).__name__, exc)
        return None


def track_wave(cfg: FinishSettings, ref: ModelRef, run_id: str, tranches: dict[str, Any],
               reference: dict[str, Any] | None, waves: int, decide: bool,
               done: set[str]) -> Trigger | None:
    """After one of a run's ``waves``: the launcher's figures of its ``tranches``
    (their counts), tested at ``tracking.significance / waves`` as the pipeline's were,
    and, if ``decide`` (no request made by the run yet), the run's retraining decision
    over ``done``, the tranches of its finished waves: a run stopped in a later wave has
    already asked for what its finished waves call for."""
    if not (cfg.tracking.enabled and tranches):
        return None
    tracking = dataclasses.replace(cfg.tracking,
                                   significance=cfg.tracking.significance / max(1, waves))
    with deferred():  # a stop signal now is raised once the wave's decision is made
        return _after_run(cfg, ref, run_id, {"tranches": tranches}, reference, tracking,
                          decide, done)


class FinishInJob:
    """``finish`` as the last step of a job whose launcher does not wait for it, called
    with the run's summary. An error is logged, not raised: the run is already recorded,
    and a retried bundle could make a second retraining request."""

    def __init__(self, cfg: FinishSettings, ref: ModelRef, run_id: str,
                 reference: dict[str, Any] | None):
        self._cfg, self._ref, self._run_id, self._reference = cfg, ref, run_id, reference

    def __call__(self, summary: dict[str, Any]) -> dict[str, Any]:
        try:
            retrain, report = finish(self._cfg, self._ref, self._run_id, summary,
                                     self._reference)
        except Exception as exc:  # noqa: BLE001 - a retried bundle would repeat the request
            _LOG.error("run %s: tracking's last step failed (the scores are recorded): %s",
                       self._run_id, exc)
            return {"run_id": self._run_id, "report": "", "trigger_id": None,
                    "error": f"{type(exc).__name__}: {exc}"}
        _LOG.info("run %s finished by its job: status %s, report %s%s", self._run_id,
                  summary.get("status"), report or "(none)",
                  f", retraining requested (trigger {retrain.trigger_id})" if retrain else "")
        return {"run_id": self._run_id, "report": report,
                "trigger_id": retrain.trigger_id if retrain else None}
