"""``beamscore runs``: list recorded runs, show one, release one that is stuck.

``release`` marks a run failed and frees its tranche leases, so the next run scores
those tranches at once; it refuses a run whose process is still alive on this host
(``--force`` releases it anyway).
"""

from __future__ import annotations

import json

from pipelines.configuration.config import Config
from pipelines.orchestration.exit_codes import EXIT_ERROR, EXIT_OK
from store import run_records
from store.database import Database, connect_existing
from store.ledger import Holder, TrancheLedger


def _open(cfg: Config) -> Database:
    db = connect_existing(cfg.db, password_env=cfg.sink.password_env, table="runs")
    if db is None:
        raise ValueError(f"no runs recorded in {cfg.db} (no database or no runs table)")
    return db


def list_runs(cfg: Config, limit: int) -> str:
    db = _open(cfg)
    try:
        records = run_records.latest(db, limit)
    finally:
        db.close()
    lines = [f"{'RUN':<26}{'STATUS':<28}{'MODEL':<14}{'STARTED':<30}{'READ':>9}"
             f"{'WRITTEN':>9}{'DEAD':>7}"]
    for r in records:
        total = (r.counts or {}).get("total") or {}
        lines.append(f"{r.run_id:<26}{r.status:<28}{r.model:<14}{str(r.started_at):<30}"
                     f"{total.get('read', ''):>9}{total.get('written', ''):>9}"
                     f"{total.get('dead_lettered', ''):>7}")
    return "\n".join(lines)


def show_run(cfg: Config, run_id: str) -> str:
    db = _open(cfg)
    try:
        record = run_records.get(db, run_id)
        if record is None:
            raise ValueError(f"no run {run_id} in {cfg.db}")
        dead = run_records.dead_letters_by_reason(db, run_id)
        held = TrancheLedger(db).held_by(run_id)
    finally:
        db.close()
    lines = [f"run {record.run_id}", f"status    {record.status}"
             + (f" ({record.error})" if record.error else ""),
             f"model     {record.model}", f"started   {record.started_at}",
             f"finished  {record.finished_at or '-'}",
             f"process   {record.host or '?'} pid {record.pid or '?'}"]
    if held:
        lines.append(f"leases    {', '.join(held)}")
    counts = record.counts or {}
    for tranche, c in (counts.get("tranches") or {}).items():
        lines.append(f"tranche {tranche}: read {c['read']}, valid {c['valid']}, scored "
                     f"{c['scored']}, dead-lettered {c['dead_lettered']}, written {c['written']}")
    for tranche, p in (counts.get("plan") or {}).items():
        if p["decision"] != "would run":
            lines.append(f"tranche {tranche}: {p['decision']}: {p['detail']}")
    if dead:
        lines.append("dead letters by stage and reason:")
        lines += [f"  {n:>8}  {stage:<10} {reason}" for stage, reason, n in dead]
    lines.append("config:")
    lines.append(json.dumps(record.config, indent=2, sort_keys=True))
    return "\n".join(lines)


def release_run(cfg: Config, run_id: str, force: bool) -> tuple[int, str]:
    """Mark ``run_id`` failed and free its leases: (exit code, what was done)."""
    db = _open(cfg)
    try:
        record = run_records.get(db, run_id)
        if record is None:
            return EXIT_ERROR, f"no run {run_id} in {cfg.db}"
        holder = record.holder
        alive_here = (record.status == run_records.RUNNING and holder.pid > 0
                      and holder.host == Holder.this_process().host and not holder.is_gone())
        if alive_here and not force:
            return EXIT_ERROR, (f"run {run_id} is still running here (pid {holder.pid}); "
                                "stop it, or use --force to release it anyway")
        held = TrancheLedger(db).held_by(run_id)
        if record.status == run_records.RUNNING:
            run_records.fail(db, run_id, "released", "by beamscore runs release")
            what = "marked failed"
        else:
            TrancheLedger(db).fail_run(run_id)
            what = f"was already {record.status}"
    finally:
        db.close()
    return EXIT_OK, (f"run {run_id} {what}; released "
                     f"{len(held)} tranche lease(s){': ' + ', '.join(held) if held else ''}")
