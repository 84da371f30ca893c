"""What a run would do: the tranches of the requested dates, each with a decision.

Decisions come from the tranche ledger (``store.ledger``): run (never scored, inputs
or model changed, forced, previous run failed), skip (completed with the same inputs
and model), busy (another run holds its lease) or missing (no folder or no input
files). The tranches to run are cut into chunks for the workers.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from landing.chunks import Chunk, balanced_chunks
from landing.tranches import TranchePlan, plan_tranches
from models.registry import ModelRef
from pipelines.configuration.config import Config
from pipelines.configuration.connection import open_database, open_existing
from store.database import Fence
from store.ledger import MISSING, RUN, TrancheLedger


@dataclass
class ScorePlan:
    """What a run would do per tranche: run, skip (ledger), busy (leased) or missing."""

    dates: list[dt.date]
    tranches: list[TranchePlan]
    decisions: dict[str, tuple[str, str]] = field(default_factory=dict)
    chunks: list[Chunk] = field(default_factory=list)
    fence: Fence | None = None  # the fencing tokens of the leases taken (launch)

    @property
    def to_read(self) -> list[TranchePlan]:
        return [t for t in self.tranches if self.decisions.get(t.tranche, ("",))[0] == RUN]

    @property
    def missing(self) -> list[TranchePlan]:
        return [t for t in self.tranches if t.missing]

    def with_decision(self, decision: str) -> list[TranchePlan]:
        return [t for t in self.tranches if self.decisions[t.tranche][0] == decision]

    def cut_chunks(self, cfg: Config) -> None:
        self.chunks = balanced_chunks(self.to_read, cfg.read.chunk_bytes, cfg.workers)


def make_plan(cfg: Config, dates: list[dt.date], ref: ModelRef,
              read_only: bool = False) -> ScorePlan:
    """List the tranches' files and ask the ledger which of them need scoring.

    ``read_only`` (``beamscore plan``) never creates a database or a table: a missing
    database or ledger means nothing was scored yet.
    """
    plan = ScorePlan(dates=dates, tranches=plan_tranches(cfg.input_root, dates))
    db = open_existing(cfg) if read_only else open_database(cfg, migrate=True)
    try:
        ledger = TrancheLedger(db) if db is not None else None
        for t in plan.tranches:
            if t.missing:
                plan.decisions[t.tranche] = (MISSING, t.missing_reason)
            elif ledger is None:
                plan.decisions[t.tranche] = (RUN, "never scored (no ledger yet)")
            else:
                plan.decisions[t.tranche] = ledger.decide(
                    t.tranche, ref.name, ref.version, tranche_fingerprint(t, cfg, ref),
                    cfg.force)
    finally:
        if db is not None:
            db.close()
    plan.cut_chunks(cfg)
    return plan


def tranche_fingerprint(t: TranchePlan, cfg: Config, ref: ModelRef) -> str:
    """What the outputs of a tranche depend on besides the model version: its files
    (paths, sizes, content identities), the input field names, the validation settings,
    the model's preprocessing and top_k."""
    settings = {"fields": dataclasses.asdict(cfg.fields),
                "validation": dataclasses.asdict(cfg.validation),
                "preprocessing": ref.metadata.get("preprocessing", {}),
                "top_k": cfg.inference.top_k}
    h = hashlib.sha256(t.fingerprint().encode())
    h.update(json.dumps(settings, sort_keys=True).encode())
    return h.hexdigest()


def files_of(t: TranchePlan) -> list[dict[str, Any]]:
    """The ledger's record of a tranche's input files."""
    return [{"path": f.path, "size": f.size, "identity": f.fingerprint} for f in t.files]
