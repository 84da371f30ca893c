"""The tranche ledger: which tranche was scored with which inputs and model, and who
is scoring what right now.

Table ``tranches`` has one row per (tranche, model_name, model_version) with the input
fingerprint (files and the settings that change outputs), the run that scored it, its
status (``running``, ``completed``, ``failed``), its counts and a lease. A scheduled
run skips a tranche completed with the same fingerprint and model version; a changed
fingerprint or model version is rescored; ``--force`` rescores anyway. Two runs of the
same tranche never both write: taking the lease is one conditional upsert that
succeeds only when no other run holds a live lease, so the second run reports the
tranche busy. A lease is live while its run renews it (a heartbeat) and, on the host
it was taken on, while its process exists: a run on the same host takes over at once
the lease of a process that is gone.

Every lease carries a fencing token (``fence``) that grows by one each time the tranche
is taken, by whichever run. A run writes its rows under the tokens it took
(``store.database.Fence``): each write transaction checks, inside itself, that the run
still holds the tranche with that token, so a run frozen past its lease (a paused VM,
a stopped process group) writes nothing once another run has taken the tranche over,
and its ``finish`` changes nothing either.

Lock order: a fenced write locks the ledger rows of its tranches in the order of their
key (``Database.check_fence``: sorted, ``FOR SHARE`` on PostgreSQL) until it commits.
Every change of several of a run's rows here (``renew``, ``fail_run``) is one statement
per row, in the same order, each its own transaction: it holds at most one ledger row
lock at a time, and never one while it waits for another, so it can never close a
deadlock cycle with a write (or with another change).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from store.database import Database, Fence, from_json, to_json, to_text
from store.schema import TRANCHES

RUNNING, COMPLETED, FAILED = "running", "completed", "failed"
# Decisions for a planned tranche.
RUN, SKIP, BUSY, MISSING = "would run", "skipped", "busy", "missing"


@dataclass(frozen=True)
class Holder:
    """The process holding a lease."""

    host: str
    pid: int

    @classmethod
    def this_process(cls) -> Holder:
        return cls(socket.gethostname(), os.getpid())

    def is_gone(self) -> bool:
        """True only when this is a process of this host that no longer exists."""
        if self.host != socket.gethostname() or not self.pid:
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False


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
    host: str | None
    pid: int | None
    fence: int | None = None

    @property
    def holder(self) -> Holder:
        return Holder(self.host or "", int(self.pid or 0))

    def lease_alive(self, now: float) -> bool:
        """Held by a running run that renews it and whose process is not known gone."""
        return (self.status == RUNNING and (self.lease_until or 0) > now
                and not self.holder.is_gone())


_ENTRY_COLUMNS = tuple(f.name for f in dataclasses.fields(LedgerEntry))


def _now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


class TrancheLedger:
    """The ``tranches`` table of ``db``. ``clock`` is the time leases are judged by,
    ``holder`` the process that takes leases through this ledger."""

    def __init__(self, db: Database, clock: Callable[[], float] = time.time,
                 holder: Holder | None = None):
        self.db = db
        self._p = db.placeholder
        self._clock = clock
        self._holder = holder or Holder.this_process()

    def get(self, tranche: str, model_name: str, model_version: str) -> LedgerEntry | None:
        p = self._p
        rows = self.db.execute(
            f"SELECT {', '.join(_ENTRY_COLUMNS)} FROM tranches WHERE tranche = {p} AND "
            f"model_name = {p} AND model_version = {p}", [tranche, model_name, model_version],
        )
        if not rows:
            return None
        entry = dict(zip(_ENTRY_COLUMNS, rows[0]))
        entry["counts"] = from_json(entry["counts"])
        entry["finished_at"] = to_text(entry["finished_at"])
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
        if entry.status == RUNNING:
            return RUN, f"run {entry.run_id} abandoned it ({_why_abandoned(entry, now)})"
        if entry.status == COMPLETED and entry.fingerprint == fingerprint:
            if force:
                return RUN, f"forced (completed by run {entry.run_id})"
            return SKIP, f"completed by run {entry.run_id} at {entry.finished_at}"
        if entry.status == COMPLETED:
            return RUN, "inputs or settings changed since run " + entry.run_id
        return RUN, f"previous run {entry.run_id} {entry.status}"

    def acquire(self, tranche: str, model_name: str, model_version: str, fingerprint: str,
                files: list[dict[str, Any]], run_id: str, lease_seconds: float
                ) -> tuple[bool, str | None]:
        """Take the tranche for ``run_id`` unless another run holds a live lease.

        Returns (taken, the run it was taken over from if that run was still marked
        running: its process is gone or it stopped renewing)."""
        p = self._p
        now = self._clock()
        before = self.get(tranche, model_name, model_version)
        abandoned = (before.run_id if before is not None and before.status == RUNNING
                     and before.run_id != run_id and not before.lease_alive(now) else "")
        row = {"tranche": tranche, "model_name": model_name, "model_version": model_version,
               "fingerprint": fingerprint, "files": to_json(files), "run_id": run_id,
               "status": RUNNING, "counts": None, "lease_until": now + lease_seconds,
               "started_at": _now_iso(), "finished_at": None, "host": self._holder.host,
               "pid": self._holder.pid,
               "fence": (before.fence or 0) + 1 if before is not None else 1}
        # The stored row is replaced only when no other run holds a live lease on it, and
        # only if no other run took it since it was read (its token is unchanged): two
        # holders never get the same token.
        self.db.upsert_values(
            TRANCHES, row, only_if=f"(tranches.status <> {p} OR tranches.lease_until <= {p} "
            f"OR tranches.run_id = {p} OR tranches.run_id = {p}) "
            f"AND COALESCE(tranches.fence, 0) = {p}",
            params=[RUNNING, now, run_id, abandoned,
                    (before.fence or 0) if before is not None else 0])
        entry = self.get(tranche, model_name, model_version)
        taken = entry is not None and entry.run_id == run_id and entry.status == RUNNING
        return taken, (abandoned or None) if taken else None

    def renew(self, run_id: str, lease_seconds: float) -> None:
        """Extend the leases ``run_id`` still holds to ``lease_seconds`` from now, one
        row at a time in key order (see the module's lock order)."""
        self._each_held(run_id, {"lease_until": self._clock() + lease_seconds})

    def confirm(self, fence: Fence, tranche: str, lease_seconds: float) -> bool:
        """Whether the run of ``fence`` still holds ``tranche`` with its token; if it
        does, its lease runs at least ``lease_seconds`` from now (never shortened), so
        that what it does next that no statement can fence (deleting files) is done
        while no other run can take the tranche over."""
        p = self._p
        until = self._clock() + lease_seconds
        return bool(self.db.execute_count(
            f"UPDATE tranches SET lease_until = CASE WHEN lease_until > {p} THEN lease_until "
            f"ELSE {p} END WHERE tranche = {p} AND model_name = {p} AND model_version = {p} "
            f"AND run_id = {p} AND fence = {p} AND status = '{RUNNING}'",
            [until, until, tranche, fence.model_name, fence.model_version, fence.run_id,
             fence.tokens.get(tranche)]))

    def _each_held(self, run_id: str, values: dict[str, Any]) -> None:
        """Set ``values`` in every row ``run_id`` holds (still ``running``), one
        statement per row, in the order of the tranche (its model is the run's), as
        ``Database.check_fence`` sorts them."""
        for tranche in sorted(self.held_by(run_id)):
            self.db.update(TRANCHES, values,
                           {"run_id": run_id, "tranche": tranche, "status": RUNNING})

    def fence(self, run_id: str, model_name: str, model_version: str,
              tranches: list[str]) -> Fence:
        """The fencing tokens with which ``run_id`` holds ``tranches`` (those it holds)."""
        entries = [self.get(t, model_name, model_version) for t in tranches]
        return Fence(run_id, model_name, model_version, {
            e.tranche: e.fence for e in entries
            if e is not None and e.run_id == run_id and e.status == RUNNING
            and e.fence is not None})

    def finish(self, run_id: str, tranche: str, status: str,
               counts: dict[str, Any] | None) -> bool:
        """Record the outcome of a tranche ``run_id`` still holds; False (nothing
        changed) if another run has taken it over."""
        return bool(self.db.update(TRANCHES, {
            "status": status, "counts": to_json(counts) if counts is not None else None,
            "finished_at": _now_iso(), "lease_until": None,
        }, {"run_id": run_id, "tranche": tranche, "status": RUNNING}))

    def lost(self, fence: Fence) -> list[str]:
        """The tranches of ``fence`` that its run no longer holds with its token."""
        return [t for t, token in sorted(fence.tokens.items())
                if (e := self.get(t, fence.model_name, fence.model_version)) is None
                or e.run_id != fence.run_id or e.fence != token]

    def fail_run(self, run_id: str) -> None:
        """Mark the tranches ``run_id`` still holds failed and free their leases, one
        row at a time in key order."""
        self._each_held(run_id, {"status": FAILED, "lease_until": None,
                                 "finished_at": _now_iso()})

    def held_by(self, run_id: str) -> list[str]:
        p = self._p
        return [r[0] for r in self.db.execute(
            f"SELECT tranche FROM tranches WHERE run_id = {p} AND status = '{RUNNING}' "
            "ORDER BY tranche", [run_id])]


def _why_abandoned(entry: LedgerEntry, now: float) -> str:
    if entry.holder.is_gone():
        return f"its process {entry.pid} on this host is gone"
    return "its lease expired " + dt.datetime.fromtimestamp(
        entry.lease_until or now, dt.timezone.utc).isoformat(timespec="seconds")
