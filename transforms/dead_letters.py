"""Write dead letters: rejected records in, ``dead_letters`` rows and JSONL files out.

The dead-letters use of the sink (``transforms.sink``). Dead letters of every stage are
buffered (at most ``flush_at`` at a time, so memory stays bounded on a bad input) and
written per tranche as one JSONL file under ``<output_dir>/dt=<tranche>/`` plus
upserted rows; each flush emits per-tranche counts on the main output (to which the
sink adds the time it waited, as it does for predictions). File names hash
their content, so a retried bundle rewrites the same files instead of adding new ones.
Rows count against the sink's rate limit like predictions, in writes of at most
``SinkSettings.write_size`` rows.

A dead letter whose row the database rejects keeps its place in the JSONL file; its
row is isolated by bisection like a prediction's and stored again as a stand-in
without the payload, whose reason carries the database's message. A stand-in the
database rejects too is logged and counted (``dead_letters_not_stored``).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import defaultdict
from collections.abc import Iterator, Sequence
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics

from store.database import Database, Fence
from store.schema import DEAD_LETTERS
from transforms.files import write_atomically
from transforms.sink import SinkTable, WriteFn, Writer, rejected_reason
from transforms.write import SinkSettings

_LOG = logging.getLogger(__name__)


class _DeadLetters(SinkTable[dict[str, Any], dict[str, Any]]):
    """Flushes every ``flush_at`` dead letters (counted in rows, not bytes)."""

    def __init__(self, run_id: str, output_dir: str, flush_at: int, fence: Fence | None):
        self.flush_rows = flush_at
        self._run_id = run_id
        self._fence = fence
        self._output_dir = output_dir.rstrip("/")
        self._not_stored = Metrics.counter("beamscore", "dead_letters_not_stored")

    def prepare(self, dl: dict[str, Any]) -> tuple[dict[str, Any], int, int]:
        return dl, 1, 0

    def cut(self, dl: dict[str, Any], start: int, end: int) -> dict[str, Any]:
        return dl  # one row: never cut

    def upsert(self, db: Database, rows: Sequence[tuple[Any, ...]]) -> int:
        return db.upsert_dead_letters(rows, self._fence)

    def flush(self, buffer: list[dict[str, Any]], writer: Writer
              ) -> Iterator[tuple[str | None, Any]]:
        by_tranche: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for dl in buffer:
            by_tranche[dl["tranche"]].append(dl)
        for tranche, dls in sorted(by_tranche.items()):
            dls.sort(key=lambda d: (d["source_file"], d["position"], d["stage"]))
            self._store(dls, writer)  # fenced: a run that lost the tranche writes no file
            self._write_file(tranche, dls)
            by_stage: dict[str, int] = defaultdict(int)
            for d in dls:
                by_stage[f"dead_{d['stage']}"] += 1
            yield None, (tranche, {"dead_lettered": len(dls), **by_stage})

    def _store(self, dls: list[dict[str, Any]], writer: Writer) -> None:
        """Upsert the rows; stand-ins for those rejected, and log any rejected again."""
        rejected = writer.write([DEAD_LETTERS.row({"run_id": self._run_id, **d})
                                 for d in dls])
        if not rejected:
            return
        failed = sorted(rejected)
        stand_ins = [dict(dls[i], payload="",
                          reason=rejected_reason(rejected[i]).replace("\x00", "\\x00"))
                     for i in failed]
        again = writer.write([DEAD_LETTERS.row({"run_id": self._run_id, **d})
                              for d in stand_ins])
        for j, message in sorted(again.items()):
            d = dls[failed[j]]
            _LOG.error("dead letter %s:%s (stage %s) is in the JSONL file only; the "
                       "database rejected its row: %s", d["source_file"], d["position"],
                       d["stage"], message)
        self._not_stored.inc(len(again))

    def _write_file(self, tranche: str, dls: list[dict[str, Any]]) -> None:
        lines = "".join(json.dumps({"run_id": self._run_id, **d}, ensure_ascii=False) + "\n"
                        for d in dls).encode()
        digest = hashlib.sha256(lines).hexdigest()[:16]
        write_atomically(
            f"{self._output_dir}/dt={tranche}/dead_letters-{self._run_id}-{digest}.jsonl", lines)


class WriteDeadLetters(beam.PTransform):
    """Dead letters -> ``dead_letters`` table + JSONL files; outputs per-tranche counts."""

    def __init__(self, sink: SinkSettings, run_id: str, output_dir: str,
                 flush_at: int = 10_000, fence: Fence | None = None):
        super().__init__()
        self._fn = WriteFn(sink, _DeadLetters(run_id, output_dir, flush_at, fence))

    def expand(self, dead: beam.PCollection) -> beam.PCollection:
        return dead | "Store dead letters" >> beam.ParDo(self._fn)
