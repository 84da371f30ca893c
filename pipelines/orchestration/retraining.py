"""After a tracked run: the figures only the launcher has, and retraining requests.

The launcher adds to ``monitoring`` the catalogue's metrics that the pipeline's profiles
cannot see (``tracking.catalogue``'s launcher stage: the share of texts emptied by
preprocessing, from the run's counts, and the dead letters by stage and reason). It then
decides whether the run asks for retraining (``tracking.policy``): an alert of an
accuracy metric at once, of a drift metric once it has lasted ``tracking.consecutive``
tranches in a row: the model version's last tranches (days) up to the run's latest, each
with the figures of the run that scored it last (the tranche ledger says which; none if
it tracked nothing), so a day scored again counts once and a backfill of several drifted
days counts each; a day never scored (a gap) is not one of them. Never twice within
``tracking.cooldown_hours``. A
request is a ``retrain_triggers`` row; the configured ``tracking.command`` is run and
its exit code recorded; the run exits 6.
"""

from __future__ import annotations

import logging
from typing import Any

from models.registry import ModelRef
from pipelines.configuration.config import TrackingConfig
from pipelines.configuration.connection import opened
from pipelines.orchestration.command_guard import run_guarded
from store import monitoring, run_records
from store.database import Database
from store.monitoring import Trigger
from store.session import DatabaseSettings
from tracking.catalogue import ACCURACY_METRICS, DRIFT_METRICS
from tracking.metrics import launcher_run_rows
from tracking.policy import ALERT

_LOG = logging.getLogger("beamscore")


def after_run(database: DatabaseSettings, tracking: TrackingConfig, ref: ModelRef,
              run_id: str, summary: dict[str, Any], reference: dict[str, Any] | None,
              decide: bool = True, done: set[str] | None = None) -> Trigger | None:
    """The launcher's figures of the tranches of ``summary`` (a run's, or one wave's),
    then, if ``decide``, the run's retraining decision so far: over ``done``, the
    tranches the run has finished (None: all of its tranches)."""
    with opened(database) as db:
        rows = _launcher_rows(db, tracking, ref, run_id, summary, reference)
        monitoring.write_rows(db, rows)
        return _maybe_trigger(db, database, tracking, ref, run_id, done) if decide else None


def _launcher_rows(db: Database, tracking: TrackingConfig, ref: ModelRef, run_id: str,
                   summary: dict[str, Any], reference: dict[str, Any] | None
                   ) -> list[dict[str, Any]]:
    """The launcher's metrics of the catalogue (``tracking.catalogue``) for each tranche
    of the run's summary, its tests corrected as one family."""
    base = {"run_id": run_id, "model_name": ref.name, "model_version": ref.version}
    figures = (reference or {}).get("reference", {})
    tranches = {tranche: (counts, run_records.dead_letters_by_reason(db, run_id, tranche))
                for tranche, counts in (summary.get("tranches") or {}).items()}
    return [r.__dict__ | base | {"tranche": tranche} for tranche, found in
            launcher_run_rows(tranches, figures, tracking).items() for r in found]


def _maybe_trigger(db: Database, database: DatabaseSettings, tracking: TrackingConfig,
                   ref: ModelRef, run_id: str, done: set[str] | None = None) -> Trigger | None:
    rows = monitoring.rows_of_run(db, run_id)
    reasons = [f"{r['metric']} {r['value']:.4g} on {r['tranche']} (threshold "
               f"{r['threshold']:.4g})" for r in rows
               if r["status"] == ALERT and r["metric"] in ACCURACY_METRICS]
    latest = monitoring.latest_by_tranche(db, ref.name, ref.version, DRIFT_METRICS, run_id,
                                          ALERT)
    if done is not None:  # the run's tranches of waves still to come have no figures yet
        latest = {t: v for t, v in latest.items() if v[0] != run_id or t in done}
    streak = _streak(latest, run_id, tracking.consecutive)
    if len(streak) == tracking.consecutive:
        for metric in sorted({r["metric"] for r in rows if r["status"] == ALERT
                              and r["metric"] in DRIFT_METRICS}):
            if all(metric in latest[t][1] for t in streak):
                reasons.append(f"{metric} alert in {len(streak)} tranches in a row "
                               f"({streak[-1]} to {streak[0]})")
    runs = list(dict.fromkeys(latest[t][0] for t in streak))
    if not reasons:
        return None
    trigger, recent = monitoring.add_trigger_after_cooldown(
        db, ref.name, ref.version, reasons, runs or [run_id], tracking.command,
        tracking.cooldown_hours)
    if trigger is None:
        assert recent is not None
        _LOG.warning("retraining would be requested (%s), but trigger %s is within the "
                     "cooldown of %s h", "; ".join(reasons), recent.trigger_id,
                     tracking.cooldown_hours)
        return None
    _LOG.warning("retraining requested for %s:%s (trigger %s): %s", ref.name, ref.version,
                 trigger.trigger_id, "; ".join(reasons))
    status, code = "requested", None
    if tracking.command:
        # Under a guard: a stop signal of the launcher reaches the command at once (the
        # launcher's decision waits for it to end), and the command ends with the launcher.
        code = run_guarded(tracking.command, database, trigger.trigger_id)
        status = "command_succeeded" if code == 0 else "command_failed"
        _LOG.info("retraining command exited %d", code)
    monitoring.finish_trigger(db, trigger.trigger_id, status, code)
    return trigger


def _streak(latest: dict[str, tuple[str, set[str]]], run_id: str, count: int) -> list[str]:
    """The last ``count`` tranches the model version scored, newest first, up to the
    latest tranche this run scored (none if it scored none): the last days of data,
    whichever runs scored them, each tranche once."""
    mine = [t for t, (run, _) in latest.items() if run == run_id]
    if not mine:
        return []
    return sorted((t for t in latest if t <= max(mine)), reverse=True)[:count]
