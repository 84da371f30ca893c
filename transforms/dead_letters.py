"""Write dead letters: rejected records in, ``dead_letters`` rows and JSONL files out.

Dead letters of every stage are buffered (at most ``flush_at`` at a time, so memory
stays bounded on a bad input) and written per tranche as one JSONL file under
``<output_dir>/dt=<tranche>/`` plus upserted rows; each flush emits per-tranche counts
on the main output. File names hash their content, so a retried bundle rewrites the
same files instead of adding new ones. Rows count against the sink's rate limit like
predictions, in writes of at most ``SinkSettings.write_size`` rows.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
from apache_beam.utils.windowed_value import WindowedValue

from store.database import Database
from store.schema import DEAD_LETTERS
from store.session import DatabaseSession, rate_limiter
from transforms.files import write_atomically
from transforms.write import SinkSettings, ThrottleTimer, windowed


class _WriteDeadLettersFn(beam.DoFn):
    def __init__(self, sink: SinkSettings, run_id: str, output_dir: str, flush_at: int):
        self._sink = sink
        self._run_id = run_id
        self._output_dir = output_dir.rstrip("/")
        self._flush_at = flush_at

    def setup(self) -> None:
        self._limiter = rate_limiter(self._sink.database, self._sink.max_rows_per_second,
                                     self._sink.machines)
        self._timer = ThrottleTimer()

    def start_bundle(self) -> None:
        self._buffer: list[dict[str, Any]] = []

    def process(self, dl: dict[str, Any]) -> Iterator[Any]:
        self._buffer.append(dl)
        if len(self._buffer) >= self._flush_at:
            for out in self._flush():
                yield out.value

    def finish_bundle(self) -> Iterator[WindowedValue]:
        yield from self._flush()

    def _flush(self) -> Iterator[WindowedValue]:
        buffer, self._buffer = self._buffer, []
        if not buffer:
            return
        by_tranche: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for dl in buffer:
            by_tranche[dl["tranche"]].append(dl)
        session = DatabaseSession(self._sink.database, self._timer.add)
        try:
            for tranche, dls in sorted(by_tranche.items()):
                dls.sort(key=lambda d: (d["source_file"], d["position"], d["stage"]))
                self._write_file(tranche, dls)
                rows = [DEAD_LETTERS.row({"run_id": self._run_id, **d}) for d in dls]
                size = self._sink.write_size
                for start in range(0, len(rows), size):
                    part = rows[start:start + size]
                    self._limiter.allow(hits_added=len(part))
                    self._timer.add(self._limiter.last_wait)
                    try:
                        session.run(functools.partial(_upsert, part))
                    finally:
                        self._limiter.done()
                by_stage: dict[str, int] = defaultdict(int)
                for d in dls:
                    by_stage[f"dead_{d['stage']}"] += 1
                yield windowed((tranche, {"dead_lettered": len(dls), **by_stage}))
        finally:
            session.close()

    def _write_file(self, tranche: str, dls: list[dict[str, Any]]) -> None:
        lines = "".join(json.dumps({"run_id": self._run_id, **d}, ensure_ascii=False) + "\n"
                        for d in dls).encode()
        digest = hashlib.sha256(lines).hexdigest()[:16]
        write_atomically(
            f"{self._output_dir}/dt={tranche}/dead_letters-{self._run_id}-{digest}.jsonl", lines)


def _upsert(rows: list[tuple[Any, ...]], db: Database) -> int:
    return db.upsert_dead_letters(rows)


class WriteDeadLetters(beam.PTransform):
    """Dead letters -> ``dead_letters`` table + JSONL files; outputs per-tranche counts."""

    def __init__(self, sink: SinkSettings, run_id: str, output_dir: str,
                 flush_at: int = 10_000):
        super().__init__()
        self._fn = _WriteDeadLettersFn(sink, run_id, output_dir, flush_at)

    def expand(self, dead: beam.PCollection) -> beam.PCollection:
        return dead | "Store dead letters" >> beam.ParDo(self._fn)
