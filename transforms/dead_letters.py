"""Write dead letters: rejected records in, ``dead_letters`` rows and JSONL files out.

The dead-letters use of the sink (``transforms.sink``). Dead letters of every stage are
buffered (at most ``flush_at`` at a time, so memory stays bounded on a bad input) and
each flush upserts their rows and emits per-tranche counts on the main output (to which
the sink adds the time it waited, as it does for predictions). Rows count against the
sink's rate limit like predictions, in writes of at most ``SinkSettings.write_size``
rows.

The JSONL files (``<output_dir>/dt=<tranche>/dead_letters-<run_id>-<digest>.jsonl``)
are written once the bundle's last flush is done, from all of its dead letters: each
flush appends its lines, sorted, to one local temporary file as a run, and the runs are
merged (a block of each in memory) and cut into files of ``flush_at`` lines per
tranche, each named by a hash of its content. The files therefore depend only on which
dead letters the bundle holds, not on the order they came in or on where the flushes
fell (the rows a database rejects reach this step when the predictions' buffer is
written, which depends on contention): a retried bundle that holds the same dead
letters rewrites the same files, and no line is written twice. Before each file the
run's lease of the tranche is checked (``Database.check_lease``): a run that lost the
tranche writes no more files.

A dead letter whose row the database rejects keeps its place in the JSONL file; its
row is isolated by bisection like a prediction's and stored again as a stand-in
without the payload, whose reason carries the database's message. A stand-in the
database rejects too is logged and counted (``dead_letters_not_stored``).
"""

from __future__ import annotations

import hashlib
import heapq
import json
import logging
import os
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from itertools import groupby, islice
from typing import IO, Any

import apache_beam as beam
from apache_beam.metrics import Metrics

from store.database import Database, Fence
from store.schema import DEAD_LETTERS
from transforms.files import write_atomically
from transforms.sink import SinkTable, WriteFn, Writer, rejected_reason
from transforms.write import SinkSettings

_LOG = logging.getLogger(__name__)


class _DeadLetters(SinkTable[dict[str, Any], dict[str, Any]]):
    """Stores every ``flush_at`` dead letters (counted in rows, not bytes); writes the
    bundle's files once its last flush is done."""

    def __init__(self, run_id: str, output_dir: str, flush_at: int, fence: Fence | None):
        self.flush_rows = flush_at
        self._run_id = run_id
        self._fence = fence
        self._output_dir = output_dir.rstrip("/")
        self._not_stored = Metrics.counter("beamscore", "dead_letters_not_stored")
        # This bundle's flushes: their lines, sorted, as runs (byte ranges) of one file.
        self._spill: IO[bytes] | None = None
        self._runs: list[tuple[int, int]] = []

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
            self._store(dls, writer)
            by_stage: dict[str, int] = defaultdict(int)
            for d in dls:
                by_stage[f"dead_{d['stage']}"] += 1
            yield None, (tranche, {"dead_lettered": len(dls), **by_stage})
        lines = sorted(self._line(d) for d in buffer)
        if self._spill is None:
            self._spill = tempfile.TemporaryFile()
        start = self._spill.seek(0, os.SEEK_END)
        self._spill.writelines(lines)
        self._runs.append((start, self._spill.tell()))

    def finish(self, writer: Writer) -> Iterator[tuple[str | None, Any]]:
        """The bundle's files: its runs merged in order, cut every ``flush_rows`` lines
        per tranche, each file after checking that the run still holds the tranche
        (the check's wait carried by an empty count of the tranche)."""
        if self._spill is None:
            return
        self._spill.flush()
        fd = self._spill.fileno()
        merged = heapq.merge(*(_lines(fd, start, end) for start, end in self._runs))
        for tranche_key, lines in groupby(merged, key=lambda line: line.split(b"\0", 1)[0]):
            tranche = tranche_key.decode()
            for part in _parts(lines, self.flush_rows):
                if self._fence is not None:
                    writer.check_lease(self._fence, tranche)
                self._write_file(tranche, b"".join(line.rsplit(b"\0", 1)[1] for line in part))
            yield None, (tranche, {"dead_lettered": 0})

    def reset(self) -> None:
        if self._spill is not None:
            self._spill.close()
        self._spill, self._runs = None, []

    def _line(self, d: dict[str, Any]) -> bytes:
        """A dead letter's JSONL line after its sort key: tranche, source file (its UTF-8
        bytes in hex, which sort as the name does and hold no newline or NUL, whatever
        the name holds), position and stage, each followed by a NUL (which no JSON line
        holds): lines sort by source file, position and stage within a tranche."""
        line = json.dumps({"run_id": self._run_id, **d}, ensure_ascii=False)
        source = d["source_file"].encode().hex()
        return (f"{d['tranche']}\0{source}\0{d['position']:020d}\0{d['stage']}\0"
                f"{line}\n").encode()

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

    def _write_file(self, tranche: str, lines: bytes) -> None:
        digest = hashlib.sha256(lines).hexdigest()[:16]
        write_atomically(
            f"{self._output_dir}/dt={tranche}/dead_letters-{self._run_id}-{digest}.jsonl", lines)


def _lines(fd: int, start: int, end: int, block: int = 1 << 16) -> Iterator[bytes]:
    """The lines (each with its newline) of bytes [start, end) of file ``fd``, read a
    block at a time."""
    rest = b""
    while start < end:
        data = os.pread(fd, min(block, end - start), start)
        if not data:
            raise EOFError(f"spill file ends at {start}, before {end}")
        start += len(data)
        *lines, rest = (rest + data).split(b"\n")
        for line in lines:
            yield line + b"\n"


def _parts(lines: Iterable[bytes], size: int) -> Iterator[list[bytes]]:
    it = iter(lines)
    while part := list(islice(it, size)):
        yield part


class WriteDeadLetters(beam.PTransform):
    """Dead letters -> ``dead_letters`` table + JSONL files; outputs per-tranche counts."""

    def __init__(self, sink: SinkSettings, run_id: str, output_dir: str,
                 flush_at: int = 10_000, fence: Fence | None = None):
        super().__init__()
        self._fn = WriteFn(sink, _DeadLetters(run_id, output_dir, flush_at, fence))

    def expand(self, dead: beam.PCollection) -> beam.PCollection:
        return dead | "Store dead letters" >> beam.ParDo(self._fn)
