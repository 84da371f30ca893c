"""Track tranches: each scored batch's statistics in, a ``monitoring`` row per figure out.

The ``BatchStats`` of every scored batch (``transforms.infer``) are combined per
tranche into a ``Profile`` by a CombineFn whose accumulators hold counts and sketches
only, merged across workers; the run's tranche profiles are then gathered (a few
kilobytes each) and compared with the model's reference together by every pipeline
metric of the catalogue (``tracking.metrics.compare_run``: the run's tests are one
family, Holm-corrected), and every figure, alert or not, is upserted into
``monitoring``. These few dozen rows per
tranche are not counted against the sink's rate limit.

Tracking never fails a run: the scores are written by then. A batch whose statistics
cannot be added, or a run whose figures cannot be computed or recorded, is logged as
an error naming the tranches and counted (``tracking_failures``, which the run summary
shows); its figures are missing, nothing else is.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from store import monitoring
from store.session import DatabaseSession, DatabaseSettings
from tracking.policy import TrackingPolicy
from tracking.profile import BatchStats, Profile
from transforms.records import RunContext

_LOG = logging.getLogger(__name__)
FAILURES = "tracking_failures"  # the counter of what tracking could not do


def _failed(what: str) -> None:
    _LOG.error("tracking: %s", what)
    Metrics.counter("beamscore", FAILURES).inc()


class _ProfileFn(beam.CombineFn):
    def __init__(self, classes: list[str]):
        self._classes = classes

    def create_accumulator(self) -> Profile:
        return Profile(classes=self._classes)

    def add_input(self, acc: Profile, stats: BatchStats) -> Profile:
        try:
            return acc.add(stats)
        except Exception as exc:  # noqa: BLE001 - tracking never fails a run
            _failed(f"a batch's statistics could not be added to its tranche's profile "
                    f"({type(exc).__name__}: {exc}); the tranche's figures leave it out")
            return acc

    def merge_accumulators(self, accs: Iterable[Profile]) -> Profile:
        accs = iter(accs)
        first = next(accs)
        for other in accs:
            first.merge(other)
        return first

    def extract_output(self, acc: Profile) -> Profile:
        return acc


class _RecordFn(beam.DoFn):
    """[(tranche, Profile)] of the run -> each tranche's metric rows upserted into
    ``monitoring``."""

    def __init__(self, database: DatabaseSettings, ctx: RunContext,
                 reference: dict[str, Any] | None, policy: TrackingPolicy, features: str):
        self._database = database
        self._ctx = ctx
        self._reference = reference
        self._policy = policy
        self._features = features

    def process(self, element: list[tuple[str, Profile]]) -> Iterator[tuple[str, int]]:
        from tracking.metrics import compare_run  # scipy: on workers only

        if not element:
            return
        try:
            reference = Profile.from_json(self._reference) if self._reference else None
            found = compare_run(dict(element), reference, self._policy, self._names)
            base = {"run_id": self._ctx.run_id, "model_name": self._ctx.model_name,
                    "model_version": self._ctx.model_version}
            rows = [r.__dict__ | base | {"tranche": tranche}
                    for tranche, tranche_rows in found.items() for r in tranche_rows]
            session = DatabaseSession(self._database)
            try:
                session.run(lambda db: monitoring.write_rows(db, rows))
            finally:
                session.close()
        except Exception as exc:  # noqa: BLE001 - tracking never fails a run
            _failed(f"run {self._ctx.run_id}: the figures of tranche(s) "
                    f"{', '.join(sorted(t for t, _ in element))} could not be computed or "
                    f"recorded ({type(exc).__name__}: {exc}); their scores stand, their "
                    "monitoring rows are missing")
            return
        for tranche, tranche_rows in found.items():
            yield tranche, len(tranche_rows)

    def _names(self, columns: list[int]) -> list[str]:
        if not self._features or not FileSystems.exists(self._features):
            return [str(c) for c in columns]
        with FileSystems.open(self._features) as fh:
            names = fh.read().decode("utf-8").split("\n")
        return [names[c] if c < len(names) else str(c) for c in columns]


class TrackTranches(beam.PTransform):
    """(tranche, BatchStats) -> (tranche, rows written) after recording each tranche's
    metrics; ``reference``: the model's reference profile (JSON), None if it has none."""

    def __init__(self, database: DatabaseSettings, ctx: RunContext, classes: list[str],
                 reference: dict[str, Any] | None, policy: TrackingPolicy,
                 features: str = ""):
        super().__init__()
        self._combine = _ProfileFn(classes)
        self._record = _RecordFn(database, ctx, reference, policy, features)

    def expand(self, stats: beam.PCollection) -> beam.PCollection:
        return (stats
                | "Profile tranches" >> beam.CombinePerKey(self._combine)
                | "Gather the run" >> beam.combiners.ToList()
                | "Record metrics" >> beam.ParDo(self._record))
