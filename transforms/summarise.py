"""Summarise the run: per-tranche counts of every step in, the run's outcome recorded.

The ``stats`` of the read, the database write and the dead-letter writer are summed per
tranche into one summary (read, valid, scored, dead-lettered, written, throttled time),
which is stored in the ``runs`` row and in ``<output_dir>/_runs/<run_id>.json``. A
tranche is marked completed in the ledger only when every record it read is accounted
for (read == written + dead-lettered); otherwise it is marked failed, and the next
scheduled run scores it again.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam

from store import runs
from store.database import Database
from store.ledger import COMPLETED, FAILED, TrancheLedger
from store.session import DatabaseSession, DatabaseSettings
from transforms.files import write_atomically

COUNT_KEYS = ("read", "valid", "scored", "dead_lettered", "written")
SUCCEEDED, RATIO_EXCEEDED = "succeeded", "dead_letter_ratio_exceeded"


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
    """The run summary: per-tranche and total counts, dead-letter ratio and status."""
    counts = finalize_counts(per_tranche)
    total = finalize_counts({"total": merge_counts(counts.values())})["total"]
    ratio = total["dead_lettered"] / total["read"] if total["read"] else 0.0
    status = SUCCEEDED if ratio <= max_ratio else RATIO_EXCEEDED
    return {"run_id": run_id, "status": status, "tranches": counts, "total": total,
            "dead_letter_ratio": round(ratio, 6)}


def accounted_for(counts: dict[str, int]) -> bool:
    return counts["read"] == counts["written"] + counts["dead_lettered"]


class _RecordRunFn(beam.DoFn):
    """{tranche: counts} -> the summary, recorded in ``runs``, the ledger and a file."""

    def __init__(self, database: DatabaseSettings, output_dir: str, run_id: str,
                 max_dead_letter_ratio: float, tranches: list[str]):
        self._database = database
        self._output_dir = output_dir.rstrip("/")
        self._run_id = run_id
        self._ratio = max_dead_letter_ratio
        self._tranches = tranches

    def process(self, per_tranche: dict[str, dict[str, int]]) -> Iterator[dict[str, Any]]:
        summary = summarise(self._run_id, {t: {} for t in self._tranches} | per_tranche,
                            self._ratio)
        session = DatabaseSession(self._database)
        try:
            session.run(lambda db: self._record(db, summary))
        finally:
            session.close()
        write_atomically(f"{self._output_dir}/_runs/{self._run_id}.json",
                         json.dumps(summary, indent=2).encode())
        yield summary

    def _record(self, db: Database, summary: dict[str, Any]) -> None:
        runs.finish(db, self._run_id, summary["status"], summary)
        ledger = TrancheLedger(db)
        for tranche, c in summary["tranches"].items():
            ledger.finish(self._run_id, tranche, COMPLETED if accounted_for(c) else FAILED, c)


class SummariseRun(beam.PTransform):
    """(tranche, counts) stats -> one summary dict, also stored in ``runs``."""

    def __init__(self, database: DatabaseSettings, output_dir: str, run_id: str,
                 max_dead_letter_ratio: float, tranches: list[str]):
        super().__init__()
        self._fn = _RecordRunFn(database, output_dir, run_id, max_dead_letter_ratio, tranches)

    def expand(self, stats: beam.PCollection) -> beam.PCollection:
        return (
            stats
            | "Sum per tranche" >> beam.CombinePerKey(merge_counts)
            | "Collect tranches" >> beam.combiners.ToDict()
            | "Record run" >> beam.ParDo(self._fn)
        )
