"""Summarise the run: per-tranche counts of every step in, the run's outcome recorded.

The ``stats`` of the read, the database write and the dead-letter writer are summed per
tranche into one summary (read, valid, scored, dead-lettered, written, throttled time),
which is stored in the ``runs`` row and in ``<output_dir>/_runs/<run_id>.json``.
``written`` and ``dead_lettered`` are counted in the database (the tranche's
``predictions`` and ``dead_letters`` rows of this run), not taken from counters: two
dead letters that the table's key makes one row count once, and the tranche does not
add up. A tranche is marked completed in the ledger only when
every record it read is accounted for (read == written + dead-lettered) and its own
dead-letter share is within ``max_dead_letter_ratio``; otherwise it is marked failed,
with the reason, and the next scheduled run scores it again. Once a tranche's records
are all accounted for, the predictions of earlier runs of the model that this run did
not write (records now dead-lettered or gone) are deleted: each record is then once in
the predictions or the dead letters.

A run of many tranches may be scored in waves, one pipeline each
(``pipelines.orchestration.score``): each wave completes or fails its own tranches in
the ledger when its pipeline ends, so a run stopped in a later wave leaves them done,
and only the last wave records the run, its summary covering every wave's tranches
(the earlier ones' counts as they recorded them in the run's record).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import apache_beam as beam

from store import run_records
from store.database import Database, Fence
from store.ledger import COMPLETED, FAILED, TrancheLedger
from store.session import DatabaseSession, DatabaseSettings
from transforms.files import write_atomically

COUNT_KEYS = ("read", "valid", "scored", "dead_lettered", "written")
SUCCEEDED, RATIO_EXCEEDED, INCOMPLETE = "succeeded", "dead_letter_ratio_exceeded", "incomplete"
INPUT_CHANGED = "input_changed"


def merge_counts(counts: Iterable[dict[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for c in counts:
        for k, v in c.items():
            out[k] = out.get(k, 0) + v
    return out


def finalize_counts(per_tranche: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    """Fill every count (0 when absent) and derive valid = read - early dead letters."""
    out = {}
    for tranche, raw in sorted(per_tranche.items()):
        c = {k: 0 for k in COUNT_KEYS} | raw
        c["valid"] = (c["read"] - c.get("dead_read", 0) - c.get("dead_validate", 0)
                      - c.get("dead_preprocess", 0))
        out[tranche] = c
    return out


def summarise(run_id: str, per_tranche: dict[str, dict[str, int]],
              max_ratio: float) -> dict[str, Any]:
    """The run summary: per-tranche and total counts, dead-letter ratio and status:
    ``incomplete`` if a tranche has records unaccounted for, else ``input_changed`` if
    an input file of a tranche changed while the run read it, else
    ``dead_letter_ratio_exceeded`` if the run's or a tranche's share of dead letters
    (``dead_share``) is above ``max_ratio``, else ``succeeded``."""
    counts = finalize_counts(per_tranche)
    total = finalize_counts({"total": merge_counts(counts.values())})["total"]
    ratio = dead_share(total)
    status = SUCCEEDED if ratio <= max_ratio else RATIO_EXCEEDED
    for c in counts.values():
        if not accounted_for(c):
            status = INCOMPLETE
        elif c.get("input_changed") and status != INCOMPLETE:
            status = INPUT_CHANGED
        elif tranche_outcome(c, max_ratio)[0] == FAILED and status == SUCCEEDED:
            status = RATIO_EXCEEDED
    return {"run_id": run_id, "status": status, "tranches": counts, "total": total,
            "dead_letter_ratio": round(ratio, 6)}


def dead_share(counts: dict[str, int]) -> float:
    """The share of dead letters among the records of ``counts``: the records that the
    rest of an unreadable file is estimated to hold beyond its one dead letter
    (``unread_estimate``) count as dead-lettered records too."""
    unread = counts.get("unread_estimate", 0)
    records = counts["read"] + unread
    return (counts["dead_lettered"] + unread) / records if records else 0.0


def accounted_for(counts: dict[str, int]) -> bool:
    return counts["read"] == counts["written"] + counts["dead_lettered"]


def tranche_outcome(counts: dict[str, int], max_ratio: float) -> tuple[str, str]:
    """(ledger status, why it failed or "") of one tranche of a finished run."""
    if not accounted_for(counts):
        return FAILED, (f"{counts['read']} read but {counts['written']} written + "
                        f"{counts['dead_lettered']} dead-lettered")
    if counts.get("input_changed"):
        return FAILED, (f"{counts['input_changed']} input file part(s) changed while the "
                        "run read them (InputChanged dead letters): scored again by the "
                        "next run of the tranche")
    ratio = dead_share(counts)
    if ratio > max_ratio:
        return FAILED, f"dead-letter ratio {ratio:.4f} > max_dead_letter_ratio {max_ratio}"
    return COMPLETED, ""


class _RecordRunFn(beam.DoFn):
    """{tranche: counts} -> the summary, recorded in ``runs``, the ledger and a file."""

    def __init__(self, database: DatabaseSettings, output_dir: str, run_id: str,
                 max_dead_letter_ratio: float, tranches: list[str], extra: dict[str, Any],
                 fence: Fence | None, wave: Wave):
        self._database = database
        self._fence = fence
        self._output_dir = output_dir.rstrip("/")
        self._run_id = run_id
        self._ratio = max_dead_letter_ratio
        self._tranches = tranches
        self._extra = extra
        self._wave = wave

    def process(self, per_tranche: dict[str, dict[str, int]]) -> Iterator[dict[str, Any]]:
        session = DatabaseSession(self._database)
        try:
            summary, recorded = session.run(lambda db: self._record(db, per_tranche))
        finally:
            session.close()
        if recorded:  # a run that lost its tranches leaves its file unwritten too
            write_atomically(f"{self._output_dir}/_runs/{self._run_id}.json",
                             json.dumps(summary, indent=2).encode())
        yield summary

    def _record(self, db: Database, per_tranche: dict[str, dict[str, int]]
                ) -> tuple[dict[str, Any], bool]:
        # One transaction: a wave's tranches, and the run's record, end together (a
        # stop that fails the run meanwhile finds all of them finished, or none).
        with db.exclusively(f"record run {self._run_id}"):
            return self._record_in(db, per_tranche)

    def _record_in(self, db: Database, per_tranche: dict[str, dict[str, int]]
                   ) -> tuple[dict[str, Any], bool]:
        counts: dict[str, dict[str, int]] = {t: {} for t in self._tranches} | per_tranche
        found = run_records.tranche_rows(db, self._run_id, counts)
        dead = run_records.dead_letter_rows(db, self._run_id)
        for tranche, c in counts.items():
            counts[tranche] = c | {"written": found.get(tranche, (0, 0))[0],
                                   "dead_lettered": dead.get(tranche, 0)}
        wave = summarise(self._run_id, counts, self._ratio)
        ledger = TrancheLedger(db)
        for tranche, c in wave["tranches"].items():
            # A tranche's rows are read once for both counts; the delete, another pass,
            # runs only where an earlier run of the model left rows (a rescore).
            if accounted_for(c) and found.get(tranche, (0, 1))[1]:
                run_records.supersede_predictions(db, self._run_id, tranche, self._fence)
            status, why = tranche_outcome(c, self._ratio)
            ledger.finish(self._run_id, tranche, status, c | ({"failed": why} if why else {}))
        if not self._wave.last:
            run_records.record_wave(db, self._run_id, wave["tranches"])
            return wave, False
        summary = summarise(self._run_id, {**self._wave.earlier, **counts},
                            self._ratio) | self._extra
        return summary, run_records.finish(db, self._run_id, summary["status"], summary)


@dataclass(frozen=True)
class Wave:
    """Where a pipeline stands in its run: the run's last (or only) wave records the
    run; an earlier one completes its own tranches and adds their counts to the run's
    record (``run_records.record_wave``). ``earlier``: those counts, for the last wave."""

    last: bool = True
    earlier: dict[str, dict[str, int]] = field(default_factory=dict)
    count: int = 1  # the run's waves: each tests its tranches at significance / count


class SummariseRun(beam.PTransform):
    """(tranche, counts) stats -> one summary dict, also stored in ``runs``. ``extra``
    (what the launch knew: the plan's decisions, the model) is added to the summary.
    ``tranches`` are those of this pipeline (its ``wave`` of the run)."""

    def __init__(self, database: DatabaseSettings, output_dir: str, run_id: str,
                 max_dead_letter_ratio: float, tranches: list[str],
                 extra: dict[str, Any] | None = None, fence: Fence | None = None,
                 wave: Wave | None = None):
        super().__init__()
        self._fn = _RecordRunFn(database, output_dir, run_id, max_dead_letter_ratio, tranches,
                                extra or {}, fence, wave or Wave())

    def expand(self, stats: beam.PCollection) -> beam.PCollection:
        return (
            stats
            | "Sum per tranche" >> beam.CombinePerKey(merge_counts)
            | "Collect tranches" >> beam.combiners.ToDict()
            | "Record run" >> beam.ParDo(self._fn)
        )
