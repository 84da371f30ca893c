"""Find duplicate ids: every id once per tranche, the first occurrence scored.

The database sink emits, for every write, an ``IdIndex`` of the rows it wrote: two
64-bit hashes of each document id (128 bits: a collision among a billion ids has a
probability below 1e-20), its source file (a batch may hold several), position and
batch key. ``FindDuplicateIds`` combines them per tranche (the accumulators hold these
arrays, never the rows) and, for every id seen more than once, keeps the first
occurrence in file order, then position, which is also the row the ``predictions``
table keeps (``store.schema``). Every later occurrence is removed from its batch's
Parquet file (found there by its file and position: the first occurrence may be in
the same batch, from an earlier file) and becomes a dead letter (stage ``dedupe``,
reason ``duplicate id in tranche``, naming the first). The rows the database refused
(the sink's dead letters already; ``IdIndex.rejected``) never reach a file (the sink
writes a batch's file without them); they are dropped here too, should a file hold
them, so that a batch's file, rewritten at most once, holds what the ``predictions``
table holds.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import apache_beam as beam
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from transforms.files import prediction_file, write_parquet
from transforms.records import RunContext, dead_letter

_KEYS = ("beamscore-ids-01", "beamscore-ids-02")  # siphash keys (16 bytes each)
REASON = "duplicate id in tranche"


def id_hashes(ids: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    """Two independent 64-bit hashes of every id (vectorised)."""
    values = np.asarray([str(i) for i in ids], dtype=object)
    return (pd.util.hash_array(values, hash_key=_KEYS[0], categorize=False),
            pd.util.hash_array(values, hash_key=_KEYS[1], categorize=False))


def _no_rows() -> np.ndarray:
    return np.zeros(0, np.int64)


@dataclass(frozen=True)
class IdIndex:
    """The ids of rows written from one slice of a batch: row i is at ``positions[i]``
    of ``files[file_of[i]]``; the rows the database refused are at ``rejected`` of
    ``files[rejected_file_of]``."""

    tranche: str
    batch_key: str
    files: tuple[str, ...]
    file_of: np.ndarray
    hi: np.ndarray
    lo: np.ndarray
    positions: np.ndarray
    rejected_file_of: np.ndarray = field(default_factory=_no_rows)
    rejected: np.ndarray = field(default_factory=_no_rows)


@dataclass(frozen=True)
class Refused:
    """A row of a batch that the database refused: it leaves the batch's file too."""

    tranche: str
    batch_key: str
    source_file: str
    position: int


@dataclass(frozen=True)
class Duplicate:
    """A later occurrence of an id in a tranche, and where its first occurrence is."""

    tranche: str
    batch_key: str
    source_file: str
    position: int
    first_file: str
    first_position: int


class _FindDuplicatesFn(beam.CombineFn):
    """IdIndex elements of one tranche -> its Duplicates, and its rows the database
    refused."""

    def create_accumulator(self) -> list[IdIndex]:
        return []

    def add_input(self, acc: list[IdIndex], item: IdIndex) -> list[IdIndex]:
        acc.append(item)
        return acc

    def merge_accumulators(self, accs: Iterable[list[IdIndex]]) -> list[IdIndex]:
        return [item for acc in accs for item in acc]

    def extract_output(self, acc: list[IdIndex]) -> list[Duplicate | Refused]:
        refused: list[Duplicate | Refused] = [
            Refused(a.tranche, a.batch_key, a.files[f], int(p))
            for a in acc for f, p in zip(a.rejected_file_of.tolist(), a.rejected.tolist())]
        return refused + self._duplicates(acc)

    @staticmethod
    def _duplicates(acc: list[IdIndex]) -> list[Duplicate | Refused]:
        if not acc:
            return []
        files = sorted({f for a in acc for f in a.files})
        rank = {f: i for i, f in enumerate(files)}
        cols = [np.concatenate(parts) for parts in zip(*(
            (a.hi, a.lo, np.asarray([rank[f] for f in a.files], dtype=np.int64)[a.file_of],
             a.positions.astype(np.int64), np.full(len(a.positions), i))
            for i, a in enumerate(acc)))]
        order = np.lexsort((cols[3], cols[2], cols[1], cols[0]))  # id, file, position
        hi, lo, file_rank, pos, item = (c[order] for c in cols)
        same_key = np.r_[False, (hi[1:] == hi[:-1]) & (lo[1:] == lo[:-1])]
        # The same occurrence twice (a retried write) is not a duplicate.
        again = same_key & np.r_[False, (file_rank[1:] == file_rank[:-1])
                                 & (pos[1:] == pos[:-1])]
        hi, lo, file_rank, pos, item = (c[~again] for c in (hi, lo, file_rank, pos, item))
        same_key = np.r_[False, (hi[1:] == hi[:-1]) & (lo[1:] == lo[:-1])]
        first = np.maximum.accumulate(np.where(same_key, 0, np.arange(len(hi))))
        return [Duplicate(acc[item[i]].tranche, acc[item[i]].batch_key,
                          files[file_rank[i]], int(pos[i]), files[file_rank[first[i]]],
                          int(pos[first[i]]))
                for i in np.flatnonzero(same_key).tolist()]


class _DropFromFilesFn(beam.DoFn):
    """(batch_key, Duplicates and Refused rows) -> the batch's Parquet file without
    them; a dead letter for each Duplicate (a Refused row has its own, the sink's)."""

    def __init__(self, output_dir: str, ctx: RunContext, payload_limit: int):
        self._output_dir = output_dir
        self._ctx = ctx
        self._payload_limit = payload_limit

    def process(self, element: tuple[str, Iterable[Duplicate | Refused]]
                ) -> Iterator[dict[str, Any]]:
        batch_key, items = element[0], list(element[1])
        path = prediction_file(self._output_dir, self._ctx, items[0].tranche, batch_key)
        drop = {(d.source_file, d.position) for d in items}
        dups = [d for d in items if isinstance(d, Duplicate)]
        ids: dict[tuple[str, int], str] = {}
        if FileSystems.exists(path):
            with FileSystems.open(path) as fh:
                table = pq.read_table(fh)
            rows = list(zip(table.column("source_file").to_pylist(),
                            table.column("position").to_pylist()))
            ids = dict(zip(rows, table.column("doc_id").to_pylist()))
            keep = [row not in drop for row in rows]
            if not all(keep):  # the sink's refused rows never reached the file
                write_parquet(path, table.filter(keep))
        for d in sorted(dups, key=lambda d: (d.source_file, d.position)):
            yield dead_letter(
                tranche=d.tranche, source_file=d.source_file, position=d.position,
                stage="dedupe", payload={"id": ids.get((d.source_file, d.position))},
                reason=f"{REASON}: first at {d.first_file} position {d.first_position}",
                payload_limit=self._payload_limit)


class FindDuplicateIds(beam.PTransform):
    """IdIndex of written rows -> dead letters of every later occurrence of an id in a
    tranche, removed from the prediction files (with the rows the database refused)."""

    def __init__(self, output_dir: str, ctx: RunContext, payload_limit: int):
        super().__init__()
        self._drop = _DropFromFilesFn(output_dir, ctx, payload_limit)

    def expand(self, ids: beam.PCollection) -> beam.PCollection:
        return (
            ids
            | "Key by tranche" >> beam.Map(lambda i: (i.tranche, i))
            | "Combine ids" >> beam.CombinePerKey(_FindDuplicatesFn())
            | "List removals" >> beam.FlatMap(lambda kv: [(d.batch_key, d) for d in kv[1]])
            | "Group by batch" >> beam.GroupByKey()
            | "Drop from files" >> beam.ParDo(self._drop)
        )
