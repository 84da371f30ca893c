"""Refused entries: the input files of a tranche that planning refused to open, as records.

A symbolic link whose target is outside the input root, and a file whose name is not
valid UTF-8 (``landing.tranches``), are never opened. Each one is a record of its
tranche that is one dead letter (stage ``read``, position 0) naming the entry and
holding no payload, and counts as read, so the tranche's counts still add up.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import apache_beam as beam

from landing.tranches import Unscored
from transforms.records import DEAD_LETTERS, STATS, dead_letter


def _refuse(item: tuple[str, Unscored]) -> Iterator[Any]:
    tranche, link = item
    yield beam.pvalue.TaggedOutput(DEAD_LETTERS, dead_letter(
        tranche=tranche, source_file=link.path, position=0, stage="read",
        reason=f"{link.why}: {link.path}", payload=None, payload_limit=0))
    yield beam.pvalue.TaggedOutput(STATS, (tranche, {"read": 1}))


class RefusedLinks(beam.PTransform):
    """(tranche, refused link) pairs -> ``dead_letters`` and ``stats`` outputs."""

    def __init__(self, refused: list[tuple[str, Unscored]]):
        super().__init__()
        self._refused = refused

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.pvalue.DoOutputsTuple:
        return (
            pbegin
            | "List refused links" >> beam.Create(self._refused, reshuffle=False)
            | "Dead-letter refused links" >> beam.FlatMap(_refuse).with_outputs(
                DEAD_LETTERS, STATS)
        )
