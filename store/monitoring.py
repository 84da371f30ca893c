"""The tracking tables: ``monitoring`` (every tracked figure of every run, alert or not)
and ``retrain_triggers`` (the requests for retraining and what became of them)."""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from store.database import Database, from_json, to_json, to_text
from store.ledger import COMPLETED
from store.schema import MONITORING, RETRAIN_TRIGGERS


@dataclass(frozen=True)
class Trigger:
    trigger_id: str
    created_at: str
    model_name: str
    model_version: str
    reasons: list[str]
    run_ids: list[str]
    status: str
    command: str
    command_exit_code: int | None


def write_rows(db: Database, rows: Iterable[dict[str, Any]]) -> int:
    """Upsert monitoring rows (dicts with the table's columns)."""
    return db.upsert(MONITORING, [MONITORING.row(r) for r in rows])


def rows_of_run(db: Database, run_id: str) -> list[dict[str, Any]]:
    found = db.execute(f"SELECT {', '.join(MONITORING.names)} FROM monitoring WHERE run_id = "
                       f"{db.placeholder} ORDER BY tranche, metric, slice", [run_id])
    return [dict(zip(MONITORING.names, r)) for r in found]


def history(db: Database, model_name: str, model_version: str, metrics: Iterable[str],
            runs: list[str]) -> list[dict[str, Any]]:
    """Rows of ``metrics`` for the model version in the given runs."""
    metrics, p = list(metrics), db.placeholder
    if not metrics or not runs:
        return []
    found = db.execute(
        f"SELECT {', '.join(MONITORING.names)} FROM monitoring WHERE model_name = {p} AND "
        f"model_version = {p} AND metric IN ({', '.join([p] * len(metrics))}) AND run_id IN "
        f"({', '.join([p] * len(runs))})", [model_name, model_version, *metrics, *runs])
    return [dict(zip(MONITORING.names, r)) for r in found]


def latest_by_tranche(db: Database, model_name: str, model_version: str,
                     metrics: Iterable[str], run_id: str, alert: str
                     ) -> dict[str, tuple[str, set[str]]]:
    """Each tranche the ledger records as scored by the model version (completed, or
    being scored by ``run_id``): the run that scored it last and which of ``metrics``
    that run found in status ``alert`` in it (in any slice). A day scored again counts
    with the figures of its last scoring only, none if that run measured none (tracking
    off)."""
    metrics, p = list(metrics), db.placeholder
    if not metrics:
        return {}
    found = db.execute(
        f"SELECT t.tranche, t.run_id, m.metric, MAX(CASE WHEN m.status = {p} THEN 1 ELSE 0 "
        f"END) FROM tranches t LEFT JOIN monitoring m ON m.run_id = t.run_id AND "
        f"m.tranche = t.tranche AND m.model_name = t.model_name AND m.model_version = "
        f"t.model_version AND m.metric IN ({', '.join([p] * len(metrics))}) WHERE "
        f"t.model_name = {p} AND t.model_version = {p} AND (t.status = {p} OR t.run_id = "
        f"{p}) GROUP BY t.tranche, t.run_id, m.metric",
        [alert, *metrics, model_name, model_version, COMPLETED, run_id])
    latest: dict[str, tuple[str, set[str]]] = {}
    for tranche, run, metric, alerted in found:
        figures = latest.setdefault(str(tranche), (str(run), set()))[1]
        if metric is not None and alerted:
            figures.add(str(metric))
    return latest


def add_trigger(db: Database, model_name: str, model_version: str, reasons: list[str],
                run_ids: list[str], command: str) -> Trigger:
    trigger = Trigger(
        trigger_id=dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ-")
        + secrets.token_hex(3),
        created_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds"),
        model_name=model_name, model_version=model_version, reasons=reasons, run_ids=run_ids,
        status="requested", command=command, command_exit_code=None)
    db.upsert(RETRAIN_TRIGGERS, [RETRAIN_TRIGGERS.row(
        trigger.__dict__ | {"reasons": to_json(reasons), "run_ids": to_json(run_ids)})])
    return trigger


def add_trigger_after_cooldown(db: Database, model_name: str, model_version: str,
                               reasons: list[str], run_ids: list[str], command: str,
                               cooldown_hours: float) -> tuple[Trigger | None, Trigger | None]:
    """(the new trigger, None), or (None, the model version's last trigger) when that
    one was made within ``cooldown_hours``: the check and the insert in one transaction
    that no other process can interleave with for this model version, so two runs
    ending together make one request."""
    with db.exclusively(f"retrain_triggers:{model_name}:{model_version}"):
        last = triggers(db, model_name, model_version)
        if last and hours_since(last[-1].created_at) < cooldown_hours:
            return None, last[-1]
        return add_trigger(db, model_name, model_version, reasons, run_ids, command), None


def hours_since(iso: str) -> float:
    """Hours from an ISO-8601 time with its offset to now."""
    then = dt.datetime.fromisoformat(iso)
    return (dt.datetime.now(dt.timezone.utc) - then).total_seconds() / 3600


def finish_trigger(db: Database, trigger_id: str, status: str, exit_code: int | None) -> None:
    db.update(RETRAIN_TRIGGERS, {"status": status, "command_exit_code": exit_code},
              {"trigger_id": trigger_id})


def triggers(db: Database, model_name: str | None = None,
             model_version: str | None = None) -> list[Trigger]:
    """The retraining requests of a model (of one version if given; every model's
    without a name), oldest first."""
    p = db.placeholder
    where, params = "1 = 1", list[str]()
    if model_name is not None:
        where, params = where + f" AND model_name = {p}", [*params, model_name]
    if model_version is not None:
        where, params = where + f" AND model_version = {p}", [*params, model_version]
    found = db.execute(f"SELECT {', '.join(RETRAIN_TRIGGERS.names)} FROM retrain_triggers "
                       f"WHERE {where} ORDER BY created_at", params)
    out = []
    for r in found:
        values = dict(zip(RETRAIN_TRIGGERS.names, r))
        values["reasons"], values["run_ids"] = from_json(values["reasons"]), \
            from_json(values["run_ids"])
        values["created_at"] = to_text(values["created_at"])
        out.append(Trigger(**values))
    return out
