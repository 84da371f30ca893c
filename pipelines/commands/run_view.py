"""``beamscore runs show RUN_ID``: what an operator needs to know of one run.

Its status as it stands now (``abandoned`` when its process or leases are gone) and its
exit code, the model and process, counts per tranche and the tranches it did not read,
dead letters by stage and reason, tracking's alerts, the retraining request it made and
its command's exit code, and its report; the resolved config only when asked for.
"""

from __future__ import annotations

import json
from typing import Any

from pipelines.commands.runs import observed_status, open_runs
from pipelines.orchestration.report import report_path
from store import monitoring, run_records
from store.ledger import TrancheLedger
from store.monitoring import Trigger
from store.session import DatabaseSettings
from tracking.policy import ALERT


def show_run(database: DatabaseSettings, run_id: str, with_config: bool = False) -> str:
    db = open_runs(database)
    try:
        record = run_records.get(db, run_id)
        if record is None:
            raise ValueError(f"no run {run_id} in {database.url}")
        status, why = observed_status(db, record, database.lease_seconds)
        dead = run_records.dead_letters_by_reason(db, run_id)
        held = TrancheLedger(db).held_by(run_id)
        alerts = [r for r in monitoring.rows_of_run(db, run_id) if r["status"] == ALERT]
        name, _, version = record.model.rpartition(":")
        trigger = next((t for t in monitoring.triggers(db, name, version)
                        if t.run_ids and t.run_ids[0] == run_id), None)
    finally:
        db.close()
    lines = _outcome(record, status, why, trigger)
    if held:
        lines.append(f"leases    {', '.join(held)}")
    lines += _counts(record.counts or {})
    if dead:
        lines.append("dead letters by stage and reason:")
        lines += [f"  {n:>8}  {stage:<10} {reason}" for stage, reason, n in dead]
    lines += _alerts(alerts) + _retraining(trigger)
    lines.append(f"report    {_report(record)}")
    if with_config:
        lines.append("config:")
        lines.append(json.dumps(record.config, indent=2, sort_keys=True))
    return "\n".join(lines)


def _outcome(record: run_records.RunRecord, status: str, why: list[str],
             trigger: Trigger | None) -> list[str]:
    recorded = "" if status == record.status else f" (recorded {record.status})"
    lines = [f"run {record.run_id}", f"status    {status}{recorded}"
             + (f" ({record.error})" if record.error else "")]
    lines += [f"          {w}" for w in why]
    lines += [f"exit code {exit_code_line(record, status, trigger)}",
              f"model     {record.model}", f"started   {record.started_at}",
              f"finished  {record.finished_at or '-'}",
              f"process   {record.host or '?'} pid {record.pid or '?'}"]
    return lines


def exit_code_line(record: run_records.RunRecord, status: str,
                   trigger: Trigger | None) -> str:
    """The exit code the launcher recorded with the run's summary, or why there is none."""
    counts = record.counts or {}
    if counts.get("exit_code") is not None:
        return str(counts["exit_code"])
    if status in (run_records.RUNNING, run_records.ABANDONED):
        return f"none: the run is {status}"
    if record.error == run_records.INTERRUPTED:
        return "not recorded: interrupted (130 for SIGINT, 143 for SIGTERM)"
    return "not recorded (a job staged for a template launcher, or its launcher stopped)"


def _counts(counts: dict[str, Any]) -> list[str]:
    lines = [f"tranche {tranche}: read {c['read']}, valid {c['valid']}, scored "
             f"{c['scored']}, dead-lettered {c['dead_lettered']}, written {c['written']}"
             for tranche, c in (counts.get("tranches") or {}).items()]
    lines += [f"tranche {tranche}: {p['decision']}: {p['detail']}"
              for tranche, p in (counts.get("plan") or {}).items()
              if p["decision"] != "would run"]
    return lines


def _alerts(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return ["alerts    none"]
    lines = [f"alerts    {len(rows)}:"]
    for r in rows:
        value = "-" if r["value"] is None else f"{r['value']:.4g}"
        threshold = "" if r["threshold"] is None else f" (threshold {r['threshold']:.4g})"
        where = f" {r['slice']}" if r["slice"] else ""
        lines.append(f"  {r['tranche']}  {r['metric']}{where} {value}{threshold}")
    return lines


def _retraining(trigger: Trigger | None) -> list[str]:
    if trigger is None:
        return ["retraining not requested by this run"]
    code = ("no command" if not trigger.command else "not run yet"
            if trigger.command_exit_code is None else f"exit code {trigger.command_exit_code}")
    return [f"retraining requested: trigger {trigger.trigger_id}, {trigger.status}; "
            f"command {code}", *[f"  {reason}" for reason in trigger.reasons]]


def _report(record: run_records.RunRecord) -> str:
    output_dir = record.config.get("output_dir")
    if not output_dir:
        return "unknown (no output_dir recorded)"
    path = report_path(str(output_dir), record.run_id)
    from apache_beam.io.filesystems import FileSystems

    return path if FileSystems.exists(path) else f"{path} (not written)"
