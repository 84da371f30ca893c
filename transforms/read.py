"""Read tranches: read tasks in, DocBatches out, every line or row accounted for.

A read task (``landing.chunks.ReadTask``) is one chunk, or several small files of one
tranche. The chunks of each file cut into byte ranges are first numbered together
(``landing.formats.number_chunks``: one pass over a JSONL file gives each of its byte
ranges the lines before it), files spread over the workers; then the tasks, gathered
back into the order they were planned in (local runners hand them out round-robin in
that order: largest first, see ``landing.chunks``), are spread over the workers and
each chunk of a task is parsed record by record by ``landing.formats``, in the task's
order. A task's records are cut into DocBatches of ``batch_size`` rows across its files
(a batch holds one tranche; each row names its file), with the configured field names
as columns, and everything that is not a record leaves as a dead letter (stage
``read``) with its file and position; lines too long to hold a text of
``max_text_chars`` are dead letters read in bounded memory, and so is a record that
cannot travel between stages (``transforms.records.impassable``). Each task also emits
its read count on ``STATS``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

import apache_beam as beam
import pandas as pd

from landing.chunks import ReadTask
from landing.formats import Rejection, number_chunks, read_chunk
from landing.reading import DEFAULT_MAX_TEXT_CHARS, Chunk
from transforms.records import (
    DEAD_LETTERS,
    DOC_ID,
    LABEL,
    METADATA,
    POSITION,
    RAW,
    SOURCE,
    STATS,
    TEXT,
    DocBatch,
    FieldNames,
    dead_letter,
    impassable,
)


class _Batcher:
    """Accumulates parsed records of one read task and cuts DocBatches of ``batch_size``,
    across the task's files."""

    def __init__(self, task: ReadTask, fields: FieldNames, batch_size: int):
        self.task = task
        self.fields = fields
        self.batch_size = batch_size
        self.records: list[dict[str, Any]] = []
        self.sources: list[str] = []  # each record's file: one object per file, repeated
        self.positions: list[int] = []
        self.n_batches = 0
        # (record, source file, position, reason) of records that cannot travel
        self.impassable: list[tuple[dict[str, Any], str, int, str]] = []

    def add(self, record: dict[str, Any], source: str, position: int) -> DocBatch | None:
        self.records.append(record)
        self.sources.append(source)
        self.positions.append(position)
        return self.flush() if len(self.records) >= self.batch_size else None

    def flush(self) -> DocBatch | None:
        bad = impassable(self.records)
        if bad:
            self.impassable += [(self.records[i], self.sources[i], self.positions[i], r)
                                for i, r in bad.items()]
            keep = [i for i in range(len(self.records)) if i not in bad]
            self.records = [self.records[i] for i in keep]
            self.sources = [self.sources[i] for i in keep]
            self.positions = [self.positions[i] for i in keep]
        if not self.records:
            return None
        batch = DocBatch(
            tranche=self.task.tranche,
            batch_key=f"{self.task.key}-{self.n_batches:05d}",
            frame=self._frame(),
        )
        self.n_batches += 1
        self.records, self.sources, self.positions = [], [], []
        return batch

    def _frame(self) -> pd.DataFrame:
        f, records = self.fields, self.records
        get = [r.get for r in records]
        meta = (
            [json.dumps({k: g(k) for k in f.metadata}, default=str) for g in get]
            if f.metadata else [None] * len(records)
        )
        return pd.DataFrame({
            DOC_ID: pd.Series([g(f.id) for g in get], dtype=object),
            TEXT: pd.Series([g(f.text) for g in get], dtype=object),
            LABEL: pd.Series([g(f.label) for g in get], dtype=object),
            SOURCE: pd.Series(self.sources, dtype=object),
            POSITION: self.positions,
            METADATA: pd.Series(meta, dtype=object),
            RAW: pd.Series(records, dtype=object),
        })


class _ReadTaskFn(beam.DoFn):
    """ReadTask -> DocBatches (main), dead letters and a read count per task."""

    def __init__(self, fields: FieldNames, batch_size: int, payload_limit: int,
                 max_text_chars: int):
        self._fields = fields
        self._batch_size = batch_size
        self._payload_limit = payload_limit
        self._max_text_chars = max_text_chars

    def process(self, task: ReadTask) -> Iterator[Any]:
        batcher = _Batcher(task, self._fields, self._batch_size)
        read = changed = unread = 0
        required = (self._fields.id, self._fields.text)
        for chunk in task.chunks:
            for item, position in read_chunk(chunk, self._batch_size, required,
                                             self._max_text_chars):
                read += 1
                if isinstance(item, Rejection):
                    changed += item.changed
                    unread += item.unread
                    yield beam.pvalue.TaggedOutput(DEAD_LETTERS, dead_letter(
                        tranche=chunk.tranche, source_file=chunk.path, position=position,
                        stage="read", reason=item.reason, payload=item.payload,
                        payload_limit=self._payload_limit))
                    continue
                out = batcher.add(item, chunk.path, position)
                if out is not None:  # a batch was cut: records held back at the cut leave too
                    yield from self._impassable(batcher)
                    yield out
        last = batcher.flush()
        yield from self._impassable(batcher)
        if last is not None:
            yield last
        yield beam.pvalue.TaggedOutput(STATS, (task.tranche, {"read": read} | (
            {"input_changed": changed} if changed else {}) | (
            {"unread_estimate": unread} if unread else {})))

    def _impassable(self, batcher: _Batcher) -> Iterator[Any]:
        """Dead letters (stage ``read``) of the records the batcher held back."""
        for record, source, position, reason in batcher.impassable:
            yield beam.pvalue.TaggedOutput(DEAD_LETTERS, dead_letter(
                tranche=batcher.task.tranche, source_file=source,
                position=position, stage="read", reason=reason, payload=record,
                payload_limit=self._payload_limit))
        batcher.impassable = []


def _in_plan(numbered: list[Chunk], tasks: list[ReadTask]) -> list[ReadTask]:
    """The planned tasks, in the planned order, with the numbered chunks in place of
    theirs (a file that could not be numbered came back as one chunk: the task of its
    first chunk reads it, the tasks of its other chunks are gone)."""
    got = {(c.path, c.start): c for c in numbered}
    paths = {c.path for c in numbered}
    out = []
    for task in tasks:
        chunks = [got.get((c.path, c.start)) if c.path in paths else c for c in task.chunks]
        kept = tuple(c for c in chunks if c is not None)
        if kept:
            out.append(ReadTask(kept))
    return out


class ReadTranches(beam.PTransform):
    """Read tasks (or chunks, each a task of its own) -> DocBatches (``batches``), with
    ``dead_letters`` and ``stats`` outputs."""

    def __init__(self, tasks: Sequence[ReadTask | Chunk], fields: FieldNames, batch_size: int,
                 payload_limit: int, max_text_chars: int = DEFAULT_MAX_TEXT_CHARS):
        super().__init__()
        self._tasks = [t if isinstance(t, ReadTask) else ReadTask((t,)) for t in tasks]
        self._fn = _ReadTaskFn(fields, batch_size, payload_limit, max_text_chars)

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.pvalue.DoOutputsTuple:
        # Only a chunk that starts inside its file needs the lines before it counted.
        files: dict[str, list[Chunk]] = {}  # path -> its chunks, in the planned order
        for task in self._tasks:
            for chunk in task.chunks:
                files.setdefault(chunk.path, []).append(chunk)
        ranges = [chunks for chunks in files.values() if any(c.start > 0 for c in chunks)]
        return (
            pbegin
            | "List files" >> beam.Create(ranges, reshuffle=False)
            | "Distribute files" >> beam.Reshuffle()
            | "Number chunks" >> beam.FlatMap(number_chunks)
            | "Gather chunks" >> beam.combiners.ToList()
            | "Restore planned order" >> beam.FlatMap(_in_plan, self._tasks)
            | "Distribute chunks" >> beam.Reshuffle()
            | "Parse records" >> beam.ParDo(self._fn).with_output_types(DocBatch)
            .with_outputs(DEAD_LETTERS, STATS, main="batches")
        )
