"""What a run would do: the tranches of the requested dates, each with a decision.

Decisions come from the tranche ledger (``store.ledger``): run (never scored, inputs
or model changed, forced, previous run failed), skip (completed with the same inputs
and model), busy (another run holds its lease), missing (no folder or no input files)
or empty (input files that hold no record; scored like any other tranche with
``allow_empty_tranches``). The tranches to run are cut into chunks for the workers;
the links they refuse (``landing.tranches``) are one dead letter each. Every entry
under the input root or a planned tranche that is never scored is listed, with why.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from landing.chunks import Chunk, ReadTask, balanced_tasks
from landing.tranches import TranchePlan, Unscored, has_records, plan_tranches, unscored_entries
from models.registry import ModelRef
from pipelines.configuration.config import InferenceConfig, ReadConfig, ValidationConfig
from pipelines.configuration.connection import open_database, open_existing
from store.database import Fence
from store.ledger import MISSING, RUN, TrancheLedger
from store.session import DatabaseSettings
from transforms.records import FieldNames

EMPTY = "empty"
_LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class PlanSettings:
    """What planning a run and taking its tranches read of the config
    (``settings_of(PlanSettings, cfg)``): where the tranches are, the ledger's database,
    what a tranche's outputs depend on (fields, validation, ``inference.top_k``), how it
    is cut into chunks (for ``parallelism`` readers), and where earlier outputs of a
    tranche taken are cleared."""

    input_root: str
    output_dir: str
    database: DatabaseSettings
    fields: FieldNames
    validation: ValidationConfig
    inference: InferenceConfig
    read: ReadConfig
    parallelism: int
    allow_empty_tranches: bool
    force: bool


@dataclass
class ScorePlan:
    """What a run would do per tranche: run, skip (ledger), busy (leased) or missing."""

    dates: list[dt.date]
    tranches: list[TranchePlan]
    decisions: dict[str, tuple[str, str]] = field(default_factory=dict)
    tasks: list[ReadTask] = field(default_factory=list)  # the reading work, largest first
    root_unscored: list[Unscored] = field(default_factory=list)  # directly under input_root
    fence: Fence | None = None  # the fencing tokens of the leases taken (launch)

    @property
    def chunks(self) -> list[Chunk]:
        """The chunks of the reading tasks."""
        return [c for t in self.tasks for c in t.chunks]

    @property
    def to_read(self) -> list[TranchePlan]:
        return [t for t in self.tranches if self.decisions.get(t.tranche, ("",))[0] == RUN]

    @property
    def missing(self) -> list[TranchePlan]:
        return [t for t in self.tranches if t.missing]

    @property
    def empty(self) -> list[TranchePlan]:
        return [t for t in self.tranches if self.decisions.get(t.tranche, ("",))[0] == EMPTY]

    @property
    def unscored(self) -> list[Unscored]:
        """Every entry under the input root and the planned tranches never scored."""
        return self.root_unscored + [u for t in self.tranches for u in t.unscored]

    @property
    def refused(self) -> list[tuple[str, Unscored]]:
        """(tranche, link) of the refused links of the tranches to read: dead letters."""
        return [(t.tranche, r) for t in self.to_read for r in t.refused]

    @property
    def has_work(self) -> bool:
        return bool(self.tasks or self.refused)

    def with_decision(self, decision: str) -> list[TranchePlan]:
        return [t for t in self.tranches if self.decisions[t.tranche][0] == decision]

    def cut_chunks(self, chunk_bytes: int, parallelism: int) -> None:
        self.tasks = balanced_tasks(self.to_read, chunk_bytes, parallelism)

    def waves(self, records: int, chunk_bytes: int, parallelism: int) -> list[ScorePlan]:
        """The tranches to read in waves of whole tranches, in date order, each of at
        least ``records`` estimated records but the last (``records`` 0: one wave, this
        plan). A wave is this plan with only its tranches to read, its chunks cut anew
        (balanced over the workers within the wave); the fence stays the run's."""
        rows: dict[str, int] = {}
        for c in self.chunks:
            rows[c.tranche] = rows.get(c.tranche, 0) + c.est_rows
        groups: list[list[str]] = [[]]
        for t in sorted(self.to_read, key=lambda t: t.tranche):
            if records > 0 and sum(rows.get(g, 0) for g in groups[-1]) >= records:
                groups.append([])
            groups[-1].append(t.tranche)
        if len(groups) == 1:
            return [self]
        by_name, out = {t.tranche: t for t in self.to_read}, []
        for group in groups:
            wave = dataclasses.replace(
                self, tranches=[by_name[name] for name in group],
                decisions={t: d for t, d in self.decisions.items() if t in group},
                root_unscored=[])
            wave.cut_chunks(chunk_bytes, parallelism)
            out.append(wave)
        return out


def make_plan(settings: PlanSettings, dates: list[dt.date], ref: ModelRef,
              read_only: bool = False) -> ScorePlan:
    """List the tranches' files and ask the ledger which of them need scoring.

    ``read_only`` (``beamscore plan``) never creates a database or a table: a missing
    database or ledger means nothing was scored yet.
    """
    plan = ScorePlan(dates=dates, tranches=plan_tranches(settings.input_root, dates),
                     root_unscored=unscored_entries(settings.input_root))
    if plan.unscored and not read_only:
        _LOG.warning("%d entr%s under input_root will never be scored (beamscore plan lists "
                     "them, with why)", len(plan.unscored),
                     "y" if len(plan.unscored) == 1 else "ies")
    db = (open_existing(settings.database) if read_only
          else open_database(settings.database, migrate=True))
    try:
        ledger = TrancheLedger(db) if db is not None else None
        for t in plan.tranches:
            if t.missing:
                plan.decisions[t.tranche] = (MISSING, t.missing_reason)
            elif not settings.allow_empty_tranches and not has_records(
                    t, (settings.fields.id, settings.fields.text)):
                plan.decisions[t.tranche] = (EMPTY, f"{len(t.files)} file(s) in {t.folder} "
                                                    "hold no record")
            elif ledger is None:
                plan.decisions[t.tranche] = (RUN, "never scored (no ledger yet)")
            else:
                plan.decisions[t.tranche] = ledger.decide(
                    t.tranche, ref.name, ref.version, tranche_fingerprint(t, settings, ref),
                    settings.force)
    finally:
        if db is not None:
            db.close()
    plan.cut_chunks(settings.read.chunk_bytes, settings.parallelism)
    return plan


def tranche_fingerprint(t: TranchePlan, settings: PlanSettings, ref: ModelRef) -> str:
    """What the outputs of a tranche depend on besides the model version: its files
    (paths, sizes, content identities), the input field names, the validation settings,
    the model's preprocessing and top_k."""
    depends = {"fields": dataclasses.asdict(settings.fields),
               "validation": dataclasses.asdict(settings.validation),
               "preprocessing": ref.metadata.get("preprocessing", {}),
               "top_k": settings.inference.top_k}
    h = hashlib.sha256(t.fingerprint().encode())
    h.update(json.dumps(depends, sort_keys=True).encode())
    return h.hexdigest()


def files_of(t: TranchePlan) -> list[dict[str, Any]]:
    """The ledger's record of a tranche's input files."""
    return [{"path": f.path, "size": f.size, "identity": f.fingerprint} for f in t.files]
