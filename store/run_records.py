"""The run record: one ``runs`` row per run, from launch to its outcome.

``start`` writes it with status ``running``, the resolved config, the model and the
launching process (host, pid); the pipeline's last step calls ``finish`` with the
summary; a launcher that sees its run fail or be interrupted calls ``fail``, which also
releases the run's tranche leases, and a run that takes over the lease of a run whose
process is gone marks that one failed with reason ``abandoned``.

A run that takes a tranche supersedes what earlier runs of the same model left for it:
their dead letters (``supersede_dead_letters``, when it takes the tranche, before it
writes) and, once every record it read is accounted for, their predictions of records
it did not write (``supersede_predictions``: records now dead-lettered or gone), so the
tranche's predictions and dead letters hold each record exactly once.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from store.database import Database, Fence, from_json, to_json, to_text
from store.ledger import Holder, TrancheLedger
from store.schema import RUNS

RUNNING, FAILED, SKIPPED = "running", "failed", "skipped"
ABANDONED, INTERRUPTED = "abandoned", "interrupted"
RELEASED = "released"  # the error of a run failed by ``beamscore runs release``


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    started_at: str
    finished_at: str | None
    status: str
    config: dict[str, Any]
    model: str
    counts: dict[str, Any] | None
    host: str | None
    pid: int | None

    @property
    def holder(self) -> Holder:
        return Holder(self.host or "", int(self.pid or 0))

    @property
    def error(self) -> str:
        return str((self.counts or {}).get("error", ""))


_COLUMNS = ("run_id", "started_at", "finished_at", "status", "config", "model", "counts",
            "host", "pid")


def new_run_id() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ-") + secrets.token_hex(3)


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


def start(db: Database, run_id: str, config: dict[str, Any], model: str,
          holder: Holder | None = None) -> None:
    holder = holder or Holder.this_process()
    db.upsert_run({
        "run_id": run_id, "started_at": now_iso(), "finished_at": None, "status": RUNNING,
        "config": to_json(config), "model": model, "counts": None, "host": holder.host,
        "pid": holder.pid,
    })


def finish(db: Database, run_id: str, status: str, counts: dict[str, Any]) -> bool:
    """Record the outcome of a run still marked running (``counts``: the run summary or
    the error); False when it has ended already, e.g. abandoned by a run that took its
    tranches over, whose record stays as it is."""
    if db.update(RUNS, {"status": status, "counts": to_json(counts),
                        "finished_at": now_iso()}, {"run_id": run_id, "status": RUNNING}):
        return True
    if get(db, run_id) is not None:
        return False
    db.upsert_run({"run_id": run_id, "started_at": now_iso(), "finished_at": now_iso(),
                   "status": status, "config": to_json({}), "model": "",
                   "counts": to_json(counts)})  # a run whose start was never recorded
    return True


def record_wave(db: Database, run_id: str, tranches: dict[str, Any]) -> None:
    """Add the per-tranche counts of a finished wave to the record of a run still
    running (``counts.tranches``), for its last wave's summary."""
    record = get(db, run_id)
    if record is not None and record.status == RUNNING:
        done = (record.counts or {}).get("tranches", {}) | tranches
        db.update(RUNS, {"counts": to_json({"tranches": done})},
                  {"run_id": run_id, "status": RUNNING})


def tranches_recorded(db: Database, run_id: str) -> dict[str, Any]:
    """The per-tranche counts the run's record holds, whatever its status: its finished
    waves' (``record_wave``, kept when it failed) or its summary's."""
    record = get(db, run_id)
    return dict((record.counts or {}).get("tranches") or {}) if record is not None else {}


def waves_recorded(db: Database, run_id: str) -> dict[str, Any]:
    """The per-tranche counts the run's finished waves recorded (``record_wave``)."""
    record = get(db, run_id)
    return dict((record.counts or {}).get("tranches", {})) if record is not None and (
        record.status == RUNNING) else {}


def fail(db: Database, run_id: str, reason: str, detail: str = "") -> bool:
    """Mark the run failed with ``reason`` and free its tranche leases; the counts of
    the tranches its finished waves recorded stay in its record. False if the run had
    ended already (its record stays as it is)."""
    error: dict[str, Any] = {"error": reason[:2000]}
    if detail:
        error["detail"] = detail[:2000]
    if done := waves_recorded(db, run_id):
        error["tranches"] = done
    marked = finish(db, run_id, FAILED, error)
    TrancheLedger(db).fail_run(run_id)
    return marked


def record_exit_code(db: Database, run_id: str, code: int) -> None:
    """Add the exit code the launcher returned to the run's recorded summary."""
    record = get(db, run_id)
    if record is not None and record.counts is not None:
        db.update(RUNS, {"counts": to_json(record.counts | {"exit_code": code})},
                  {"run_id": run_id})


def lease_lost(db: Database, run_id: str, tranches: list[str]) -> None:
    """Record that ``run_id`` lost the leases of ``tranches`` to another run: status
    ``abandoned``, reason ``lease lost``, in place of the ``failed``/``abandoned`` the run
    that took over may have marked (its tranches and rows stay the other run's)."""
    error: dict[str, Any] = {"error": "lease lost", "detail": "another run took over "
                             "tranche(s) " + ", ".join(tranches)
                             + "; this run wrote nothing after that"}
    if done := tranches_recorded(db, run_id):
        error["tranches"] = done
    for status in (RUNNING, FAILED, ABANDONED):
        db.update(RUNS, {"status": ABANDONED, "counts": to_json(error),
                         "finished_at": now_iso()}, {"run_id": run_id, "status": status})


def mark_abandoned(db: Database, run_id: str, by: str) -> None:
    """Fail a run that another run took over from, if it is still marked running."""
    record = get(db, run_id)
    if record is not None and record.status == RUNNING:
        fail(db, run_id, ABANDONED, f"its tranches were taken over by run {by}")


def summary(db: Database, run_id: str) -> dict[str, Any] | None:
    """The summary a finished run recorded, or None."""
    record = get(db, run_id)
    return record.counts if record is not None and record.counts else None


def get(db: Database, run_id: str) -> RunRecord | None:
    rows = db.execute(f"SELECT {', '.join(_COLUMNS)} FROM runs WHERE run_id = "
                      f"{db.placeholder}", [run_id])
    return _record(rows[0]) if rows else None


def latest(db: Database, limit: int) -> list[RunRecord]:
    rows = db.execute(f"SELECT {', '.join(_COLUMNS)} FROM runs ORDER BY started_at DESC, "
                      f"run_id DESC LIMIT {int(limit)}")
    return [_record(r) for r in rows]


def of_model_up_to(db: Database, record: RunRecord, count: int) -> list[RunRecord]:
    """The last ``count`` runs of ``record``'s model (name and version) that started no
    later than it (it included), latest first: a run's history as of that run,
    whatever ran since."""
    p = db.placeholder
    start = f"(SELECT started_at FROM runs WHERE run_id = {p})"
    rows = db.execute(
        f"SELECT {', '.join(_COLUMNS)} FROM runs WHERE model = {p} AND (started_at < {start} "
        f"OR (started_at = {start} AND run_id <= {p})) ORDER BY started_at DESC, "
        f"run_id DESC LIMIT {int(count)}",
        [record.model, record.run_id, record.run_id, record.run_id])
    return [_record(r) for r in rows]


def written_rows(db: Database, run_id: str, tranches: Iterable[str]) -> dict[str, int]:
    """Rows of this run in ``predictions``, per tranche (found by the key's tranche)."""
    p = db.placeholder
    return {t: int(db.execute(f"SELECT count(*) FROM predictions WHERE tranche = {p} AND "
                              f"run_id = {p}", [t, run_id])[0][0]) for t in tranches}


def dead_letter_rows(db: Database, run_id: str) -> dict[str, int]:
    """Rows of this run in ``dead_letters``, per tranche."""
    rows = db.execute(f"SELECT tranche, count(*) FROM dead_letters WHERE run_id = "
                      f"{db.placeholder} GROUP BY tranche", [run_id])
    return {str(t): int(n) for t, n in rows}


def tranche_rows(db: Database, run_id: str, tranches: Iterable[str]
                 ) -> dict[str, tuple[int, int]]:
    """Per tranche, in one pass over its rows of ``predictions``: (rows of this run, rows
    of this run's model that other runs left there, which ``supersede_predictions``
    would delete); the second is 0 for a run without a recorded model."""
    model = _model_of(db, run_id)
    if model is None:
        return {t: (n, 0) for t, n in written_rows(db, run_id, tranches).items()}
    p = db.placeholder
    sql = (f"SELECT count(CASE WHEN run_id = {p} THEN 1 END), count(CASE WHEN "
           f"{_stale(p)} THEN 1 END) FROM predictions WHERE tranche = {p}")
    found = {}
    for t in tranches:
        mine, others = db.execute(sql, [run_id, *model, run_id, t])[0]
        found[t] = (int(mine or 0), int(others or 0))
    return found


def _model_of(db: Database, run_id: str) -> tuple[str, str] | None:
    """(model name, version) of a run's record; None without a record or a model."""
    record = get(db, run_id)
    if record is None or ":" not in record.model:
        return None
    name, version = record.model.rsplit(":", 1)
    return name, version


def _stale(p: str) -> str:
    """A prediction of the run's model that the run did not write (parameters: model
    name, model version, run id): what superseding deletes."""
    return f"model_name = {p} AND model_version = {p} AND run_id <> {p}"


def reason_kind(reason: str) -> str:
    """A dead letter's reason up to its first colon: what went wrong, without the
    record's own details (``duplicate id in tranche: first at FILE position 3``)."""
    return str(reason).split(":")[0][:120]


def dead_letters_by_reason(db: Database, run_id: str, tranche: str | None = None
                           ) -> list[tuple[str, str, int]]:
    """(stage, reason kind, count) of a run's dead letters (of one tranche if given),
    most frequent first."""
    p = db.placeholder
    where, params = f"run_id = {p}", [run_id]
    if tranche is not None:
        where, params = where + f" AND tranche = {p}", params + [tranche]
    found: Counter[tuple[str, str]] = Counter()
    for stage, reason, n in db.execute(
            f"SELECT stage, reason, count(*) FROM dead_letters WHERE {where} "
            "GROUP BY stage, reason", params):
        found[(str(stage), reason_kind(reason))] += int(n)
    return [(stage, reason, n) for (stage, reason), n in
            sorted(found.items(), key=lambda kv: (-kv[1], kv[0]))]


def models_of(db: Database, run_ids: Iterable[str]) -> dict[str, str]:
    """Run id -> its model (``name:version``) of every run in ``run_ids`` with a record."""
    ids = sorted(set(run_ids))
    if not ids:
        return {}
    marks = ", ".join([db.placeholder] * len(ids))
    return {str(r): str(m) for r, m in db.execute(
        f"SELECT run_id, model FROM runs WHERE run_id IN ({marks})", ids)}


def supersede_dead_letters(db: Database, tranche: str, model: str, run_id: str,
                           fence: Fence | None = None) -> int:
    """Delete the dead letters of ``tranche`` of every other run of ``model``; how many.
    With ``fence``, only while the run still holds the tranche with its token (in the
    same statement: ``_while_held``)."""
    p = db.placeholder
    sql = (f"DELETE FROM dead_letters WHERE tranche = {p} AND run_id <> {p} AND run_id IN "
           f"(SELECT run_id FROM runs WHERE model = {p})")
    params: list[Any] = [tranche, run_id, model]
    if fence is not None:
        held, more = _while_held(p, fence, tranche)
        sql, params = sql + held, params + more
    return db.execute_count(sql, params)


def supersede_predictions(db: Database, run_id: str, tranche: str,
                          fence: Fence | None = None) -> int:
    """Delete the predictions of ``tranche`` by the model of ``run_id`` that this run did
    not write (records now dead-lettered, or no longer in the input); how many. With
    ``fence``, in the same statement only while the run still holds the tranche with
    its token: a run that lost it deletes nothing of the run that took it over."""
    model = _model_of(db, run_id)
    if model is None:
        return 0
    name, version = model
    p = db.placeholder
    sql = f"DELETE FROM predictions WHERE tranche = {p} AND {_stale(p)}"
    params: list[Any] = [tranche, name, version, run_id]
    if fence is not None:
        held, more = _while_held(p, fence, tranche)
        sql, params = sql + held, params + more
    return db.execute_count(sql, params)


def _while_held(p: str, fence: Fence, tranche: str) -> tuple[str, list[Any]]:
    """The condition (`` AND EXISTS ...``) and its parameters that a statement of the
    run of ``fence`` holds ``tranche`` with its token: a run that lost the tranche
    changes nothing of the run that took it over."""
    return (f" AND EXISTS (SELECT 1 FROM tranches WHERE tranche = {p} AND model_name = "
            f"{p} AND model_version = {p} AND run_id = {p} AND fence = {p} AND "
            f"status = '{RUNNING}')",
            [tranche, fence.model_name, fence.model_version, fence.run_id,
             fence.tokens.get(tranche)])


def _record(row: tuple[Any, ...]) -> RunRecord:
    values = dict(zip(_COLUMNS, row))
    values["config"] = from_json(values["config"]) or {}
    values["counts"] = from_json(values["counts"])
    values["started_at"] = to_text(values["started_at"])
    values["finished_at"] = to_text(values["finished_at"])
    return RunRecord(**values)
