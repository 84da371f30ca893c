"""The tranche ledger: which tranche was scored with which inputs and model, and who
is scoring what right now.

Table ``tranches`` has one row per (tranche, model_name, model_version) with the input
fingerprint (paths, sizes, content identities), the run that scored it, its status
(``running``, ``completed``, ``failed``), its counts and a lease. A scheduled run skips a
tranche completed with the same fingerprint and model version; a changed fingerprint
or model version is rescored; ``--force`` rescores anyway. Two runs of the same tranche
never both write: taking the lease is one conditional upsert that succeeds only when
no other run holds an unexpired lease, so the second run reports the tranche busy.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from store.database import Database

RUNNING, COMPLETED, FAILED = "running", "completed", "failed"
# Decisions for a planned tranche.
RUN, SKIP, BUSY, MISSING = "would run", "skipped", "busy", "missing"


@dataclass(frozen=True)
class LedgerEntry:
    tranche: str
    model_name: str
    model_version: str
    fingerprint: str
    run_id: str
    status: str
    counts: dict[str, Any] | None
    lease_until: float | None
    finished_at: str | None

    def lease_alive(self, now: float) -> bool:
        return self.status == RUNNING and (self.lease_until or 0) > now


_ENTRY_COLUMNS = tuple(f.name for f in dataclasses.fields(LedgerEntry))


def _now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


class TrancheLedger:
    """The ``tranches`` table of ``db``; ``clock`` gives the time leases are judged by."""

    def __init__(self, db: Database, clock: Callable[[], float] = time.time):
        self.db = db
        self._p = db.placeholder
        self._clock = clock

    def get(self, tranche: str, model_name: str, model_version: str) -> LedgerEntry | None:
        p = self._p
        rows = self.db.execute(
            f"SELECT {', '.join(_ENTRY_COLUMNS)} FROM tranches WHERE tranche = {p} AND "
            f"model_name = {p} AND model_version = {p}", [tranche, model_name, model_version],
        )
        if not rows:
            return None
        entry = dict(zip(_ENTRY_COLUMNS, rows[0]))
        entry["counts"] = json.loads(entry["counts"]) if entry["counts"] else None
        return LedgerEntry(**entry)

    def decide(self, tranche: str, model_name: str, model_version: str, fingerprint: str,
               force: bool) -> tuple[str, str]:
        """(decision, detail) for one tranche that has input files."""
        now = self._clock()
        entry = self.get(tranche, model_name, model_version)
        if entry is None:
            return RUN, "never scored with this model version"
        if entry.lease_alive(now):
            return BUSY, f"run {entry.run_id} holds it until " + dt.datetime.fromtimestamp(
                entry.lease_until or 0, dt.timezone.utc).isoformat(timespec="seconds")
        if entry.status == COMPLETED and entry.fingerprint == fingerprint:
            if force:
                return RUN, f"forced (completed by run {entry.run_id})"
            return SKIP, f"completed by run {entry.run_id} at {entry.finished_at}"
        if entry.status == COMPLETED:
            return RUN, "input files changed since run " + entry.run_id
        return RUN, f"previous run {entry.run_id} {entry.status}"

    def acquire(self, tranche: str, model_name: str, model_version: str, fingerprint: str,
                files: list[dict[str, Any]], run_id: str, lease_seconds: int) -> bool:
        """Take the tranche for ``run_id`` unless another run holds a live lease."""
        p = self._p
        now = self._clock()
        self.db.execute(
            "INSERT INTO tranches (tranche, model_name, model_version, fingerprint, files, "
            "run_id, status, counts, lease_until, started_at, finished_at) VALUES "
            f"({p}, {p}, {p}, {p}, {p}, {p}, '{RUNNING}', NULL, {p}, {p}, NULL) "
            "ON CONFLICT (tranche, model_name, model_version) DO UPDATE SET "
            "fingerprint = excluded.fingerprint, files = excluded.files, run_id = excluded.run_id, "
            "status = excluded.status, counts = NULL, lease_until = excluded.lease_until, "
            "started_at = excluded.started_at, finished_at = NULL "
            f"WHERE tranches.status <> '{RUNNING}' OR tranches.lease_until <= {p} "
            "OR tranches.run_id = excluded.run_id",
            [tranche, model_name, model_version, fingerprint, json.dumps(files), run_id,
             now + lease_seconds, _now_iso(), now],
        )
        entry = self.get(tranche, model_name, model_version)
        return entry is not None and entry.run_id == run_id and entry.status == RUNNING

    def renew(self, run_id: str, lease_seconds: int) -> None:
        p = self._p
        self.db.execute(
            f"UPDATE tranches SET lease_until = {p} WHERE run_id = {p} AND status = '{RUNNING}'",
            [self._clock() + lease_seconds, run_id],
        )

    def finish(self, run_id: str, tranche: str, status: str,
               counts: dict[str, Any] | None) -> None:
        p = self._p
        self.db.execute(
            f"UPDATE tranches SET status = {p}, counts = {p}, finished_at = {p}, "
            f"lease_until = NULL WHERE run_id = {p} AND tranche = {p}",
            [status, json.dumps(counts) if counts is not None else None, _now_iso(), run_id,
             tranche],
        )

    def fail_run(self, run_id: str) -> None:
        p = self._p
        self.db.execute(
            f"UPDATE tranches SET status = '{FAILED}', lease_until = NULL, finished_at = {p} "
            f"WHERE run_id = {p} AND status = '{RUNNING}'", [_now_iso(), run_id],
        )
