"""After a tracked run: the figures only the launcher has, and retraining requests.

The launcher adds to ``monitoring`` what the pipeline's profiles cannot see: the share
of texts emptied by preprocessing (from the run's counts) and the dead letters by
stage and reason. It then decides whether the run asks for retraining
(``tracking.policy``): an accuracy alert at once, a drift alert once it has lasted
``tracking.consecutive`` runs of the model version in a row, never twice within
``tracking.cooldown_hours``. A request is a ``retrain_triggers`` row; the configured
``tracking.command`` is run and its exit code recorded; the run exits 6.
"""

from __future__ import annotations

import datetime as dt
import logging
import subprocess
from typing import Any

from models.registry import ModelRef
from pipelines.configuration.config import Config
from pipelines.configuration.connection import opened
from store import monitoring, run_records
from store.database import Database
from store.monitoring import Trigger
from tracking.policy import ACCURACY_METRICS, ALERT, DRIFT_METRICS, INSUFFICIENT, OK

_LOG = logging.getLogger("beamscore")


def after_run(cfg: Config, ref: ModelRef, run_id: str, summary: dict[str, Any],
              reference: dict[str, Any] | None) -> Trigger | None:
    with opened(cfg) as db:
        rows = _launcher_rows(db, cfg, ref, run_id, summary, reference)
        monitoring.write_rows(db, rows)
        return _maybe_trigger(db, cfg, ref, run_id)


def _launcher_rows(db: Database, cfg: Config, ref: ModelRef, run_id: str,
                   summary: dict[str, Any], reference: dict[str, Any] | None
                   ) -> list[dict[str, Any]]:
    base = {"run_id": run_id, "model_name": ref.name, "model_version": ref.version,
            "ci_low": None, "ci_high": None}
    rows = []
    ref_empty = (reference or {}).get("reference", {}).get("empty_share")
    for tranche, c in (summary.get("tranches") or {}).items():
        emptied, checked = c.get("dead_preprocess", 0), c["valid"] + c.get("dead_preprocess", 0)
        share = emptied / checked if checked else 0.0
        threshold, status = None, OK if checked >= cfg.tracking.min_records else INSUFFICIENT
        if ref_empty is not None and status == OK:
            from scipy import stats  # imported when needed: not on the launcher's start-up

            threshold = float(ref_empty) + cfg.tracking.empty_increase
            p_value = stats.binomtest(emptied, checked, min(1.0, max(float(ref_empty), 1e-9)),
                                      alternative="greater").pvalue
            status = ALERT if share > threshold and p_value < cfg.tracking.significance else OK
        rows.append(base | {"tranche": tranche, "metric": "empty_share", "slice": "",
                            "value": share, "n": checked, "threshold": threshold,
                            "status": status})
        for stage, reason, n in run_records.dead_letters_by_reason(db, run_id, tranche):
            rows.append(base | {"tranche": tranche, "metric": "dead_letters",
                                "slice": f"{stage}: {reason}", "value": float(n), "n": n,
                                "threshold": None, "status": OK})
    return rows


def _maybe_trigger(db: Database, cfg: Config, ref: ModelRef, run_id: str) -> Trigger | None:
    rows = monitoring.rows_of_run(db, run_id)
    reasons = [f"{r['metric']} {r['value']:.4g} on {r['tranche']} (threshold "
               f"{r['threshold']:.4g})" for r in rows
               if r["status"] == ALERT and r["metric"] in ACCURACY_METRICS]
    streak = _recent_runs(db, ref, run_id, cfg.tracking.consecutive)
    if len(streak) == cfg.tracking.consecutive:
        history = monitoring.history(db, ref.name, ref.version, DRIFT_METRICS, streak)
        for metric in sorted({r["metric"] for r in rows if r["status"] == ALERT
                              and r["metric"] in DRIFT_METRICS}):
            alerted = {r["run_id"] for r in history if r["metric"] == metric
                       and r["status"] == ALERT}
            if alerted >= set(streak):
                reasons.append(f"{metric} alert in {len(streak)} runs in a row")
    if not reasons:
        return None
    last = monitoring.triggers(db, ref.name, ref.version)
    if last and _hours_since(last[-1].created_at) < cfg.tracking.cooldown_hours:
        _LOG.warning("retraining would be requested (%s), but trigger %s is within the "
                     "cooldown of %s h", "; ".join(reasons), last[-1].trigger_id,
                     cfg.tracking.cooldown_hours)
        return None
    trigger = monitoring.add_trigger(db, ref.name, ref.version, reasons, streak or [run_id],
                                     cfg.tracking.command)
    _LOG.warning("retraining requested for %s:%s (trigger %s): %s", ref.name, ref.version,
                 trigger.trigger_id, "; ".join(reasons))
    status, code = "requested", None
    if cfg.tracking.command:
        code = subprocess.run(cfg.tracking.command, shell=True, check=False).returncode
        status = "command_succeeded" if code == 0 else "command_failed"
        _LOG.info("retraining command exited %d", code)
    monitoring.finish_trigger(db, trigger.trigger_id, status, code)
    return trigger


def _recent_runs(db: Database, ref: ModelRef, run_id: str, count: int) -> list[str]:
    """This run and the model version's runs before it that were tracked, newest first."""
    model = f"{ref.name}:{ref.version}"
    tracked = [r.run_id for r in run_records.latest(db, 200)
               if r.model == model and r.status not in (run_records.SKIPPED, run_records.RUNNING)
               or r.run_id == run_id]
    if run_id in tracked:
        tracked = tracked[tracked.index(run_id):]
    with_rows = [r for r in tracked if monitoring.history(db, ref.name, ref.version,
                                                          DRIFT_METRICS, [r])]
    return with_rows[:count]


def _hours_since(iso: str) -> float:
    then = dt.datetime.fromisoformat(iso)
    return (dt.datetime.now(dt.timezone.utc) - then).total_seconds() / 3600
