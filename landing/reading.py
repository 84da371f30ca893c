"""The reading contract every input format implements.

A ``Chunk`` is a unit of reading work (a whole file, a byte range of one, or a row
range of one); a format's reader turns it into ``Item`` pairs: a record (a dict) or a
``Rejection`` (why a line or row is not a record, with its raw payload), each with its
position, a 1-based line or row number, or 0 for the whole file. ``ReadOptions`` carries
what a reader is told by the run, and ``open_input`` opens a file as the readers need it.
"""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, BinaryIO

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems


@dataclass(frozen=True)
class Chunk:
    """A unit of reading work: a file, a byte range of an uncompressed file, or a row
    range of a file (``start``/``end`` are bytes or rows, as the format splits)."""

    tranche: str
    path: str
    format: str
    start: int = 0
    end: int = -1  # -1 = to end of file
    index: int = 0
    est_rows: int = 0  # estimated records, for balancing chunks across workers

    @property
    def key(self) -> str:
        digest = hashlib.sha1(self.path.encode()).hexdigest()[:12]
        return f"{digest}-{self.index:04d}"


@dataclass(frozen=True)
class Rejection:
    """A line or row that is not a record: the reason and the raw payload."""

    reason: str
    payload: Any


Item = tuple["dict[str, Any] | Rejection", int]


@dataclass(frozen=True)
class ReadOptions:
    """What a reader is told: rows per decoded batch and the columns a record needs."""

    batch_size: int = 4096
    required: tuple[str, ...] = ()


@contextmanager
def open_input(path: str, gzipped: bool = False) -> Iterator[BinaryIO]:
    """``path`` opened for binary reading, decompressed when ``gzipped``. Python's gzip,
    not Beam's: it raises on a truncated stream instead of ending quietly."""
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as raw:
        yield gzip.GzipFile(fileobj=raw, mode="rb") if gzipped else raw  # type: ignore[misc]
