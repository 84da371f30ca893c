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
from pipelines.configuration.config import Config
from pipelines.configuration.connection import opened
from pipelines.orchestration.exit_codes import LaunchError, UsageError
from pipelines.orchestration.options import LOCAL_RUNNERS, check_runner, pipeline_options
from pipelines.orchestration.plan import ScorePlan, files_of, tranche_fingerprint
from pipelines.orchestration.supersede import clear_tranche
from store import run_records
from store.ledger import BUSY, Holder, TrancheLedger
from store.session import DatabaseSettings
from store.settings import sink_values
from tracking.policy import TrackingPolicy
from transforms.write import SinkSettings

_LOG = logging.getLogger(__name__)


def database_settings(cfg: Config) -> DatabaseSettings:
    """The database URL with every key of the ``sink`` section."""
    return DatabaseSettings(cfg.db, **sink_values(cfg.sink))


def sink_settings(cfg: Config, beam_args: list[str] | None = None) -> SinkSettings:
    """Sink settings; a rate limit off one machine needs Redis or a fixed VM count."""
    machines = 1
    if cfg.runner not in LOCAL_RUNNERS and cfg.sink.max_rows_per_second and \
            not cfg.sink.redis_url:
        workers = pipeline_options(cfg, beam_args or []).view_as(WorkerOptions)
        machines = workers.max_num_workers or workers.num_workers or 0
        if not machines:
            raise LaunchError(
                "sink.max_rows_per_second on a distributed runner needs either "
                "sink.redis_url (one job-wide budget) or --max_num_workers (each worker VM "
                "then gets max_rows_per_second / max_num_workers)")
    return SinkSettings(
        database=database_settings(cfg), machines=machines,
        payload_limit=cfg.validation.max_payload_chars, progress_seconds=cfg.progress_seconds)


def check_launch(cfg: Config, beam_args: list[str]) -> SinkSettings:
    """Everything that can be checked before a run row or a lease is written."""
    check_runner(cfg, beam_args)
    return sink_settings(cfg, beam_args)


def tracking_policy(cfg: Config) -> TrackingPolicy:
    return TrackingPolicy(**{f.name: getattr(cfg.tracking, f.name)
                             for f in dataclasses.fields(TrackingPolicy)})


def reference_of(cfg: Config, ref: ModelRef) -> dict[str, Any] | None:
    """The model's reference profile (JSON), None if it has none or tracking is off."""
    if not cfg.tracking.enabled:
        return None
    data = ModelRegistry(cfg.registry).read_file(ref, PROFILE_FILE)
    if data is None:
        _LOG.warning("model %s:%s has no reference profile: tranches are profiled but not "
                     "compared (train it, or register it with --reference)", ref.name,
                     ref.version)
        return None
    profile: dict[str, Any] = json.loads(data)
    return profile


def unpickle_policy(cfg: Config) -> Policy:
    return Policy(cfg.inference.trusted_types, cfg.inference.allow_pickle)


NO_MODEL = "no model: pass --model NAME or set model in the config"


def require_model(cfg: Config) -> str:
    """The configured model; there is no default model, so none is a usage error."""
    if not cfg.model:
        raise UsageError(NO_MODEL)
    return cfg.model


def resolve_model(cfg: Config) -> ModelRef:
    """Fix the model version at launch and verify its artifact (not unpickled here).

    The globals the metadata says the artifact needs are checked against the unpickling
    policy now, so a missing ``inference.trusted_types`` entry fails before any run
    starts; the workers' restricted unpickler enforces the policy on the artifact itself
    whatever the metadata says."""
    registry = ModelRegistry(cfg.registry)
    ref = registry.resolve(require_model(cfg))
    registry.verify(ref, cfg.inference.allow_sklearn_mismatch)
    policy = unpickle_policy(cfg)
    if policy.allow_pickle:
        _LOG.warning("inference.allow_pickle is set: model %s:%s is unpickled without the "
                     "allow-list, so its artifact can run any code", ref.name, ref.version)
    try:
        check_globals(ref.metadata.get("globals", []), policy)
    except UntrustedGlobal as exc:
        raise LaunchError(f"model {ref.name}:{ref.version}: {exc}") from exc
    return ref


def with_model_fields(cfg: Config, ref: ModelRef) -> Config:
    """The config with the id/text/label field names the model was trained with, for
    every one the config does not name itself."""
    recorded = {k: ref.metadata.get(f"{k}_field") for k in ("id", "text", "label")}
    changes: dict[str, Any] = {
        k: v for k, v in recorded.items()
        if isinstance(v, str) and v and f"fields.{k}" not in cfg.explicit_keys
        and v != getattr(cfg.fields, k)}
    if not changes:
        return cfg
    _LOG.info("input fields from model %s:%s: %s", ref.name, ref.version, changes)
    return dataclasses.replace(cfg, fields=dataclasses.replace(cfg.fields, **changes))


def start_run(cfg: Config, ref: ModelRef, run_id: str) -> None:
    with opened(cfg, migrate=True) as db:
        run_records.start(db, run_id, cfg.to_dict(), f"{ref.name}:{ref.version}")


def acquire_tranches(cfg: Config, plan: ScorePlan, ref: ModelRef, run_id: str,
                     lease_seconds: float | None = None, holder: Holder | None = None) -> None:
    """Take a lease of ``lease_seconds`` (default ``sink.lease_seconds``) for ``holder``
    (default this process) on every tranche to score; one another run holds becomes busy.
    A tranche taken is cleared of earlier runs' dead letters and of temporary files
    (``supersede``) before anything is written to it. A run whose lease is taken over
    (its process is gone, or it stopped renewing) is marked failed, reason
    ``abandoned``."""
    with opened(cfg, migrate=True) as db:
        ledger = TrancheLedger(db, holder=holder)
        for t in plan.to_read:
            taken, previous = ledger.acquire(
                t.tranche, ref.name, ref.version, tranche_fingerprint(t, cfg, ref),
                files_of(t), run_id, lease_seconds or cfg.sink.lease_seconds)
            if previous:
                _LOG.warning("tranche %s taken over from run %s, marked failed (abandoned)",
                             t.tranche, previous)
                run_records.mark_abandoned(db, previous, by=run_id)
            if taken:
                clear_tranche(db, cfg.output_dir, t.tranche, f"{ref.name}:{ref.version}",
                              run_id)
            else:
                entry = ledger.get(t.tranche, ref.name, ref.version)
                plan.decisions[t.tranche] = (BUSY, f"run {entry.run_id if entry else '?'} "
                                                   "took it first")
        plan.fence = ledger.fence(run_id, ref.name, ref.version,
                                  [t.tranche for t in plan.to_read])
    plan.cut_chunks(cfg)


def lost_leases(cfg: Config, plan: ScorePlan) -> list[str]:
    """The tranches this run took that another run has taken over since (fencing)."""
    if plan.fence is None or not plan.fence.tokens:
        return []
    with opened(cfg, window=30) as db:
        return TrancheLedger(db).lost(plan.fence)


def record_lease_lost(cfg: Config, run_id: str, lost: list[str]) -> dict[str, object]:
    """Record that the run lost ``lost`` (status ``abandoned``, reason ``lease lost``);
    the summary the launcher prints."""
    with opened(cfg) as db:
        run_records.lease_lost(db, run_id, lost)
    return {"run_id": run_id, "status": run_records.ABANDONED, "error": "lease lost",
            "lost": lost, "tranches": {}, "total": {}}


def record_exit_code(cfg: Config, run_id: str, code: int) -> None:
    """Keep the exit code in the run's record (``beamscore runs show``); a database
    that does not answer costs a warning, never the code itself."""
    try:
        with opened(cfg, window=10) as db:
            run_records.record_exit_code(db, run_id, code)
    except Exception as exc:  # noqa: BLE001 - the run's outcome is already decided
        _LOG.warning("could not record exit code %d of run %s: %s", code, run_id, exc)


def finish_run(cfg: Config, run_id: str, status: str, summary: dict[str, object]) -> None:
    with opened(cfg) as db:
        run_records.finish(db, run_id, status, summary)


# A failing or stopped run waits this long at most for its database to mark it failed
# (a scheduler's stop timeout is short; its leases expire anyway).
FAIL_WINDOW_SECONDS = 30.0


def fail_run(cfg: Config, run_id: str, reason: str, detail: str = "") -> None:
    with opened(cfg, window=min(FAIL_WINDOW_SECONDS, cfg.sink.connect_timeout_seconds)) as db:
        run_records.fail(db, run_id, reason, detail)


def run_summary(cfg: Config, run_id: str) -> dict[str, object] | None:
    with opened(cfg) as db:
        return run_records.summary(db, run_id)


class LeaseKeeper(threading.Thread):
    """The heartbeat: renews the run's tranche leases every quarter lease while the
    launcher waits for the pipeline."""

    def __init__(self, cfg: Config, run_id: str):
        super().__init__(name="beamscore-lease", daemon=True)
        self._cfg, self._run_id = cfg, run_id
        self._stop_event = threading.Event()

    def run(self) -> None:
        period = max(0.5, self._cfg.sink.lease_seconds / 4)
        while not self._stop_event.wait(period):
            try:
                with opened(self._cfg) as db:
                    TrancheLedger(db).renew(self._run_id, self._cfg.sink.lease_seconds)
            except Exception as exc:  # noqa: BLE001 - retried at the next period
                _LOG.warning("could not renew tranche leases: %s", exc)

    def stop(self) -> None:
        self._stop_event.set()
