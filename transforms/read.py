"""Read tranches: chunks in, DocBatches out, every line or row accounted for.

The chunks of each file are first numbered together (``landing.formats.number_chunks``:
one pass over a JSONL file gives each of its byte ranges the lines before it), files
spread over the workers; then the chunks, gathered back into the order they were
planned in (local runners hand them out round-robin in that order: largest first, see
``landing.chunks``), are spread over the workers and each one is parsed record by
record by ``landing.formats``;
records are cut into DocBatches of ``batch_size`` rows with the configured field names
as columns, and everything that is not a record leaves as a dead letter (stage
``read``) with its position; lines too long to hold a text of ``max_text_chars`` are
dead letters read in bounded memory, and so is a record that cannot travel between
stages (``transforms.records.impassable``). Each chunk also emits its read count on
``STATS``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import pandas as pd

from landing.formats import Rejection, number_chunks, read_chunk
from landing.reading import DEFAULT_MAX_TEXT_CHARS, Chunk
from transforms.records import (
    DEAD_LETTERS,
    DOC_ID,
    LABEL,
    METADATA,
    POSITION,
    RAW,
    STATS,
    TEXT,
    DocBatch,
    FieldNames,
    dead_letter,
    impassable,
)


class _Batcher:
    """Accumulates parsed records of one chunk and cuts DocBatches of ``batch_size``."""

    def __init__(self, chunk: Chunk, fields: FieldNames, batch_size: int):
        self.chunk = chunk
        self.fields = fields
        self.batch_size = batch_size
        self.records: list[dict[str, Any]] = []
        self.positions: list[int] = []
        self.n_batches = 0
        # (record, position, reason) of records that cannot travel between stages
        self.impassable: list[tuple[dict[str, Any], int, str]] = []

    def add(self, record: dict[str, Any], position: int) -> DocBatch | None:
        self.records.append(record)
        self.positions.append(position)
        return self.flush() if len(self.records) >= self.batch_size else None

    def flush(self) -> DocBatch | None:
        bad = impassable(self.records)
        if bad:
            self.impassable += [(self.records[i], self.positions[i], r) for i, r in bad.items()]
            keep = [i for i in range(len(self.records)) if i not in bad]
            self.records = [self.records[i] for i in keep]
            self.positions = [self.positions[i] for i in keep]
        if not self.records:
            return None
        batch = DocBatch(
            tranche=self.chunk.tranche,
            source_file=self.chunk.path,
            batch_key=f"{self.chunk.key}-{self.n_batches:05d}",
            frame=self._frame(self.records, self.positions),
        )
        self.n_batches += 1
        self.records, self.positions = [], []
        return batch

    def _frame(self, records: list[dict[str, Any]], positions: list[int]) -> pd.DataFrame:
        f = self.fields
        get = [r.get for r in records]
        meta = (
            [json.dumps({k: g(k) for k in f.metadata}, default=str) for g in get]
            if f.metadata else [None] * len(records)
        )
        return pd.DataFrame({
            DOC_ID: pd.Series([g(f.id) for g in get], dtype=object),
            TEXT: pd.Series([g(f.text) for g in get], dtype=object),
            LABEL: pd.Series([g(f.label) for g in get], dtype=object),
            POSITION: positions,
            METADATA: pd.Series(meta, dtype=object),
            RAW: pd.Series(records, dtype=object),
        })


class _ReadChunkFn(beam.DoFn):
    """Chunk -> DocBatches (main), dead letters and a read count per chunk."""

    def __init__(self, fields: FieldNames, batch_size: int, payload_limit: int,
                 max_text_chars: int):
        self._fields = fields
        self._batch_size = batch_size
        self._payload_limit = payload_limit
        self._max_text_chars = max_text_chars

    def process(self, chunk: Chunk) -> Iterator[Any]:
        batcher = _Batcher(chunk, self._fields, self._batch_size)
        read = changed = unread = 0
        required = (self._fields.id, self._fields.text)
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
            out = batcher.add(item, position)
            if out is not None:  # a batch was cut: records held back at the cut leave too
                yield from self._impassable(batcher)
                yield out
        last = batcher.flush()
        yield from self._impassable(batcher)
        if last is not None:
            yield last
        yield beam.pvalue.TaggedOutput(STATS, (chunk.tranche, {"read": read} | (
            {"input_changed": changed} if changed else {}) | (
            {"unread_estimate": unread} if unread else {})))


    def _impassable(self, batcher: _Batcher) -> Iterator[Any]:
        """Dead letters (stage ``read``) of the records the batcher held back."""
        for record, position, reason in batcher.impassable:
            yield beam.pvalue.TaggedOutput(DEAD_LETTERS, dead_letter(
                tranche=batcher.chunk.tranche, source_file=batcher.chunk.path,
                position=position, stage="read", reason=reason, payload=record,
                payload_limit=self._payload_limit))
        batcher.impassable = []


def _planned_order(chunks: list[Chunk]) -> dict[tuple[str, int], int]:
    """(path, start) -> the chunk's place in the plan."""
    return {(c.path, c.start): i for i, c in enumerate(chunks)}


def _in_order(chunks: list[Chunk], order: dict[tuple[str, int], int]) -> list[Chunk]:
    return sorted(chunks, key=lambda c: order[(c.path, c.start)])


class ReadTranches(beam.PTransform):
    """Chunks -> DocBatches (``batches``), with ``dead_letters`` and ``stats`` outputs."""

    def __init__(self, chunks: list[Chunk], fields: FieldNames, batch_size: int,
                 payload_limit: int, max_text_chars: int = DEFAULT_MAX_TEXT_CHARS):
        super().__init__()
        self._chunks = chunks
        self._fn = _ReadChunkFn(fields, batch_size, payload_limit, max_text_chars)

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.pvalue.DoOutputsTuple:
        files: dict[str, list[Chunk]] = {}  # path -> its chunks, in the planned order
        for chunk in self._chunks:
            files.setdefault(chunk.path, []).append(chunk)
        return (
            pbegin
            | "List files" >> beam.Create(list(files.values()), reshuffle=False)
            | "Distribute files" >> beam.Reshuffle()
            | "Number chunks" >> beam.FlatMap(number_chunks)
            | "Gather chunks" >> beam.combiners.ToList()
            | "Restore planned order" >> beam.FlatMap(_in_order, _planned_order(self._chunks))
            | "Distribute chunks" >> beam.Reshuffle()
            | "Parse records" >> beam.ParDo(self._fn).with_output_types(DocBatch)
            .with_outputs(DEAD_LETTERS, STATS, main="batches")
        )
