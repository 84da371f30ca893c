"""Launch-time work of a scoring run, done before any worker starts.

In order: check everything that can be checked without writing anything (the runner
and its options, the sink settings against the runner), resolve the model to one
version and verify its artifact (``ModelRegistry.verify``, never unpickled here), take
the input field names the model was trained with unless the config names others, plan
the tranches, open the ``runs`` row and take a lease on the tranches to score. While
the pipeline runs, ``LeaseKeeper`` renews the leases (a heartbeat); if the run fails or
is interrupted, ``fail_run`` marks it failed and frees them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
from typing import Any

from apache_beam.options.pipeline_options import WorkerOptions

from models.behaviour import PROFILE_FILE
from models.registry import ModelRef, ModelRegistry
from models.unpickle import Policy, UntrustedGlobal, check_globals
from pipelines.configuration.config import Config, InferenceConfig, settings_of
from pipelines.configuration.connection import opened
from pipelines.orchestration.exit_codes import LaunchError, UsageError
from pipelines.orchestration.options import (
    LOCAL_RUNNERS,
    RunnerSettings,
    check_runner,
    pipeline_options,
)
from pipelines.orchestration.plan import PlanSettings, ScorePlan, files_of, tranche_fingerprint
from pipelines.orchestration.supersede import clear_tranche
from store import run_records
from store.database import Fence
from store.ledger import BUSY, Holder, TrancheLedger
from store.session import DatabaseSettings
from store.settings import SinkConfig
from tracking.policy import TrackingPolicy
from transforms.outcome import merge_counts
from transforms.records import FieldNames
from transforms.write import SinkSettings

_LOG = logging.getLogger(__name__)


def machines(runner: RunnerSettings, sink: SinkConfig, beam_args: list[str]) -> int:
    """The machines that share ``sink.max_rows_per_second`` (each gets an equal share);
    a rate limit off one machine needs Redis or a fixed VM count."""
    if runner.runner in LOCAL_RUNNERS or not sink.max_rows_per_second or sink.redis_url:
        return 1
    workers = pipeline_options(runner, beam_args).view_as(WorkerOptions)
    count: int = workers.max_num_workers or workers.num_workers or 0
    if not count:
        raise LaunchError(
            "sink.max_rows_per_second on a distributed runner needs either "
            "sink.redis_url (one job-wide budget) or --max_num_workers (each worker VM "
            "then gets max_rows_per_second / max_num_workers)")
    return count


def check_launch(cfg: Config, beam_args: list[str]) -> SinkSettings:
    """Everything that can be checked before a run row or a lease is written (the runner
    and its options, the sink's rate limit against them); the sink's settings."""
    runner = settings_of(RunnerSettings, cfg)
    check_runner(runner, beam_args)
    return SinkSettings(
        database=cfg.database, machines=machines(runner, cfg.sink, beam_args),
        payload_limit=cfg.validation.max_payload_chars, progress_seconds=cfg.progress_seconds)


def tracking_policy(tracking: TrackingPolicy, waves: int = 1) -> TrackingPolicy:
    """The policy's keys of the ``tracking`` section, without the section's other keys;
    for one of a run's ``waves``, its significance shared among them (Bonferroni: each
    wave's tests are one Holm family at ``significance / waves``, so that the run's
    chance of any false alert stays within ``significance``)."""
    policy = TrackingPolicy(**{f.name: getattr(tracking, f.name)
                               for f in dataclasses.fields(TrackingPolicy)})
    return dataclasses.replace(policy, significance=policy.significance / max(1, waves))


def reference_of(registry: str, ref: ModelRef, tracked: bool) -> dict[str, Any] | None:
    """The model's reference profile (JSON), None if it has none or tracking is off."""
    if not tracked:
        return None
    data = ModelRegistry(registry).read_file(ref, PROFILE_FILE)
    if data is None:
        _LOG.warning("model %s:%s has no reference profile: tranches are profiled but not "
                     "compared (train it, or register it with --reference)", ref.name,
                     ref.version)
        return None
    profile: dict[str, Any] = json.loads(data)
    return profile


def unpickle_policy(inference: InferenceConfig) -> Policy:
    return Policy(inference.trusted_types, inference.allow_pickle)


NO_MODEL = "no model: pass --model NAME or set model in the config"


def require_model(model: str) -> str:
    """The configured model; there is no default model, so none is a usage error."""
    if not model:
        raise UsageError(NO_MODEL)
    return model


def resolve_model(registry: str, model: str, inference: InferenceConfig) -> ModelRef:
    """Fix the model version at launch and verify its artifact (not unpickled here).

    The globals the metadata says the artifact needs are checked against the unpickling
    policy now, so a missing ``inference.trusted_types`` entry fails before any run
    starts; the workers' restricted unpickler enforces the policy on the artifact itself
    whatever the metadata says."""
    models = ModelRegistry(registry)
    ref = models.resolve(require_model(model))
    models.verify(ref, inference.allow_sklearn_mismatch)
    policy = unpickle_policy(inference)
    if policy.allow_pickle:
        _LOG.warning("inference.allow_pickle is set: model %s:%s is unpickled without the "
                     "allow-list, so its artifact can run any code", ref.name, ref.version)
    try:
        check_globals(ref.metadata.get("globals", []), policy)
    except UntrustedGlobal as exc:
        raise LaunchError(f"model {ref.name}:{ref.version}: {exc}") from exc
    return ref


def model_fields(fields: FieldNames, explicit_keys: tuple[str, ...], ref: ModelRef
                 ) -> FieldNames:
    """``fields`` with the id/text/label field names the model was trained with, for
    every one the config does not name itself (``explicit_keys``)."""
    recorded = {k: ref.metadata.get(f"{k}_field") for k in ("id", "text", "label")}
    changes: dict[str, Any] = {
        k: v for k, v in recorded.items()
        if isinstance(v, str) and v and f"fields.{k}" not in explicit_keys
        and v != getattr(fields, k)}
    if not changes:
        return fields
    _LOG.info("input fields from model %s:%s: %s", ref.name, ref.version, changes)
    return dataclasses.replace(fields, **changes)


def start_run(database: DatabaseSettings, ref: ModelRef, run_id: str,
              config: dict[str, Any]) -> None:
    """Open the run's record, with the resolved ``config`` it runs with."""
    with opened(database, migrate=True) as db:
        run_records.start(db, run_id, config, f"{ref.name}:{ref.version}")


def acquire_tranches(settings: PlanSettings, plan: ScorePlan, ref: ModelRef, run_id: str,
                     lease_seconds: float | None = None, holder: Holder | None = None,
                     clear: bool = True) -> None:
    """Take a lease of ``lease_seconds`` (default ``sink.lease_seconds``) for ``holder``
    (default this process) on every tranche to score; one another run holds becomes busy.
    With ``clear``, a tranche taken is cleared at once (``clear_tranches``); without,
    the caller clears each before anything is written to it. A run whose lease is taken
    over
    (its process is gone, or it stopped renewing) is marked failed, reason
    ``abandoned``."""
    lease = lease_seconds or settings.database.lease_seconds
    with opened(settings.database, migrate=True) as db:
        ledger = TrancheLedger(db, holder=holder)
        for t in plan.to_read:
            taken, previous = ledger.acquire(
                t.tranche, ref.name, ref.version, tranche_fingerprint(t, settings, ref),
                files_of(t), run_id, lease)
            if previous:
                _LOG.warning("tranche %s taken over from run %s, marked failed (abandoned)",
                             t.tranche, previous)
                run_records.mark_abandoned(db, previous, by=run_id)
            if not taken:
                entry = ledger.get(t.tranche, ref.name, ref.version)
                plan.decisions[t.tranche] = (BUSY, f"run {entry.run_id if entry else '?'} "
                                                   "took it first")
        plan.fence = ledger.fence(run_id, ref.name, ref.version,
                                  [t.tranche for t in plan.to_read])
        if clear:
            for tranche in sorted(plan.fence.tokens):
                clear_tranche(db, settings.output_dir, tranche, f"{ref.name}:{ref.version}",
                              plan.fence, lease)
    plan.cut_chunks(settings.read.chunk_bytes, settings.parallelism)


def clear_tranches(settings: PlanSettings, tranches: list[str], ref: ModelRef,
                   fence: Fence) -> None:
    """Clear ``tranches`` of earlier runs' dead letters, of the model version's
    prediction files and of temporary files (``supersede``), right before the run writes
    them: a tranche scored in a later wave keeps its earlier results until then.
    Fenced (``fence``): ``LeaseLost`` if the run no longer holds one of them."""
    with opened(settings.database) as db:
        for tranche in tranches:
            clear_tranche(db, settings.output_dir, tranche, f"{ref.name}:{ref.version}",
                          fence, settings.database.lease_seconds)


def lost_leases(database: DatabaseSettings, plan: ScorePlan,
                only: list[str] | None = None) -> list[str]:
    """The tranches this run took (``only`` those: the ones it has not finished yet)
    that another run has taken over since (fencing)."""
    fence = plan.fence
    if fence is not None and only is not None:
        fence = dataclasses.replace(fence, tokens={t: token for t, token in
                                                   fence.tokens.items() if t in only})
    if fence is None or not fence.tokens:
        return []
    with opened(database, window=30) as db:
        return TrancheLedger(db).lost(fence)


def record_lease_lost(database: DatabaseSettings, run_id: str, lost: list[str]
                      ) -> dict[str, object]:
    """Record that the run lost ``lost`` (status ``abandoned``, reason ``lease lost``);
    the summary the launcher prints."""
    with opened(database) as db:
        run_records.lease_lost(db, run_id, lost)
        TrancheLedger(db).fail_run(run_id)  # the tranches it still holds: free them
        done = run_records.tranches_recorded(db, run_id)  # its finished waves'
    return {"run_id": run_id, "status": run_records.ABANDONED, "error": "lease lost",
            "lost": lost, "tranches": done, "total": merge_counts(done.values())}


def record_exit_code(database: DatabaseSettings, run_id: str, code: int) -> None:
    """Keep the exit code in the run's record (``beamscore runs show``); a database
    that does not answer costs a warning, never the code itself."""
    try:
        with opened(database, window=10) as db:
            run_records.record_exit_code(db, run_id, code)
    except Exception as exc:  # noqa: BLE001 - the run's outcome is already decided
        _LOG.warning("could not record exit code %d of run %s: %s", code, run_id, exc)


def finish_run(database: DatabaseSettings, run_id: str, status: str,
               summary: dict[str, object]) -> None:
    with opened(database) as db:
        run_records.finish(db, run_id, status, summary)


# A failing or stopped run waits this long at most for its database to mark it failed
# (a scheduler's stop timeout is short; its leases expire anyway).
FAIL_WINDOW_SECONDS = 30.0


def fail_run(database: DatabaseSettings, run_id: str, reason: str, detail: str = "") -> bool:
    """Mark the run failed (False: it had ended already) and free its leases."""
    with opened(database, window=min(FAIL_WINDOW_SECONDS,
                                     database.connect_timeout_seconds)) as db:
        return run_records.fail(db, run_id, reason, detail)


def run_summary(database: DatabaseSettings, run_id: str) -> dict[str, object] | None:
    with opened(database) as db:
        return run_records.summary(db, run_id)


class LeaseKeeper(threading.Thread):
    """The heartbeat: renews the run's tranche leases every quarter lease while the
    launcher waits for the pipeline."""

    def __init__(self, database: DatabaseSettings, run_id: str):
        super().__init__(name="beamscore-lease", daemon=True)
        self._database, self._run_id = database, run_id
        self._stop_event = threading.Event()

    def run(self) -> None:
        period = max(0.5, self._database.lease_seconds / 4)
        while not self._stop_event.wait(period):
            try:
                with opened(self._database) as db:
                    TrancheLedger(db).renew(self._run_id, self._database.lease_seconds)
            except Exception as exc:  # noqa: BLE001 - retried at the next period
                _LOG.warning("could not renew tranche leases: %s", exc)

    def stop(self) -> None:
        self._stop_event.set()
