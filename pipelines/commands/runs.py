"""``beamscore runs``: list recorded runs, show one, release one that is stuck.

A run recorded ``running`` whose process or leases are gone is shown ``abandoned``,
judged as ``plan`` judges its tranches (``observed_status``). ``release`` marks a run
failed and frees its tranche leases, so the next run scores those tranches at once; it
refuses a run whose process is still alive on this host (``--force`` releases it
anyway). These commands read only the database: ``--config`` and the database flags.
"""

from __future__ import annotations

import argparse
import sys

from pipelines.commands.common import SESSION_KEYS, add_config_keys, command_config
from pipelines.configuration.connection import open_existing
from pipelines.orchestration.exit_codes import EXIT_ERROR, EXIT_OK
from store import run_records
from store.database import Database
from store.ledger import BUSY, Holder, TrancheLedger
from store.monitoring import hours_since
from store.session import DatabaseSettings


def add_runs_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="runs_command", required=True, metavar="COMMAND")
    rl = sub.add_parser("list", help="the latest runs, newest first",
                        description="The latest runs, newest first.")
    rl.add_argument("--limit", type=_count, default=20, metavar="N",
                    help="runs to list (20)")
    rl.set_defaults(handler=_list)
    rs = sub.add_parser("show", help="a run's outcome, counts, dead letters, alerts, "
                                     "retraining request and report",
                        description="A run's status and exit code, counts per tranche, "
                                    "dead letters by reason, alerts, retraining request "
                                    "and report.")
    rs.add_argument("run_id", help="the run")
    rs.add_argument("--show-config", action="store_true",
                    help="also print the run's resolved config (JSON)")
    rs.set_defaults(handler=_show)
    rr = sub.add_parser("release", help="mark a run failed and free its tranche leases",
                        description="Mark a run failed and free its tranche leases.")
    rr.add_argument("run_id", help="the run")
    rr.add_argument("--force", dest="release_force", action="store_true",
                    help="release it even if its process is alive on this host")
    rr.set_defaults(handler=_release)
    for command in (rl, rs, rr):
        add_config_keys(command, SESSION_KEYS)


def _count(text: str) -> int:
    """A number of runs to list: 1 or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _print(text: str) -> int:
    print(text)
    return EXIT_OK


def _list(args: argparse.Namespace) -> int:
    return _print(list_runs(command_config(args).database, args.limit))


def _show(args: argparse.Namespace) -> int:
    from pipelines.commands.run_view import show_run

    return _print(show_run(command_config(args).database, args.run_id, args.show_config))


def _release(args: argparse.Namespace) -> int:
    code, message = release_run(command_config(args).database, args.run_id,
                                args.release_force)
    print(message if code == EXIT_OK else f"beamscore: error: {message}",
          file=sys.stdout if code == EXIT_OK else sys.stderr)
    return code


def open_runs(database: DatabaseSettings) -> Database:
    """The configured database, which must hold a ``runs`` table (it is not created)."""
    db = open_existing(database, table="runs")
    if db is None:
        raise ValueError(f"no runs recorded in {database.url} (no database or no runs table)")
    return db


def observed_status(db: Database, record: run_records.RunRecord, lease_seconds: float
                    ) -> tuple[str, list[str]]:
    """(status, why) of a run as it stands now: a run recorded ``running`` whose leases
    the ledger would let another run take (its process on this host is gone, or it
    stopped renewing them) is ``abandoned``; why is the ledger's word for each of its
    tranches. So is one that holds none and whose process is gone, or that holds none
    and started more than ``lease_seconds`` ago (a live run holds a lease on each
    tranche it has not finished from its first seconds to its record: one killed
    before it took them, on another host, would otherwise be running for ever)."""
    if record.status != run_records.RUNNING:
        return record.status, []
    ledger = TrancheLedger(db)
    name, _, version = record.model.rpartition(":")
    why = []
    for tranche in ledger.held_by(record.run_id):
        decision, detail = ledger.decide(tranche, name, version, "", force=False)
        if decision == BUSY:
            return record.status, []
        why.append(f"tranche {tranche}: {detail}")
    if why:
        return run_records.ABANDONED, why
    if record.holder.is_gone():
        return run_records.ABANDONED, [f"its process {record.pid} on this host is gone"]
    try:
        age = hours_since(str(record.started_at)) * 3600
    except (ValueError, TypeError):  # a start time without its offset: not judged by it
        age = 0.0
    if age > lease_seconds:
        return run_records.ABANDONED, [
            f"it holds no tranche lease and started at {record.started_at}, more than "
            f"sink.lease_seconds ({lease_seconds:g} s) ago"]
    return record.status, []


def list_runs(database: DatabaseSettings, limit: int) -> str:
    db = open_runs(database)
    try:
        records = [(r, observed_status(db, r, database.lease_seconds)[0])
                   for r in run_records.latest(db, limit)]
    finally:
        db.close()
    lines = [f"{'RUN':<26}{'STATUS':<28}{'MODEL':<14}{'STARTED':<30}{'READ':>9}"
             f"{'WRITTEN':>9}{'DEAD':>7}"]
    for r, status in records:
        total = (r.counts or {}).get("total") or {}
        lines.append(f"{r.run_id:<26}{status:<28}{r.model:<14}{str(r.started_at):<30}"
                     f"{total.get('read', ''):>9}{total.get('written', ''):>9}"
                     f"{total.get('dead_lettered', ''):>7}")
    return "\n".join(lines)


def release_run(database: DatabaseSettings, run_id: str, force: bool) -> tuple[int, str]:
    """Mark ``run_id`` failed and free its leases: (exit code, what was done)."""
    db = open_runs(database)
    try:
        record = run_records.get(db, run_id)
        if record is None:
            return EXIT_ERROR, f"no run {run_id} in {database.url}"
        holder = record.holder
        alive_here = (record.status == run_records.RUNNING and holder.pid > 0
                      and holder.host == Holder.this_process().host and not holder.is_gone())
        if alive_here and not force:
            return EXIT_ERROR, (f"run {run_id} is still running here (pid {holder.pid}); "
                                "stop it, or use --force to release it anyway")
        held = TrancheLedger(db).held_by(run_id)
        if record.status == run_records.RUNNING:
            run_records.fail(db, run_id, run_records.RELEASED, "by beamscore runs release")
            what = "marked failed"
        else:
            TrancheLedger(db).fail_run(run_id)
            what = f"was already {record.status}"
    finally:
        db.close()
    return EXIT_OK, (f"run {run_id} {what}; released "
                     f"{len(held)} tranche lease(s){': ' + ', '.join(held) if held else ''}")
