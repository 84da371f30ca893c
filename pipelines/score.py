"""The scoring pipeline: plan at launch, build the Beam graph, run, summarise.

``run(argv, test_pipeline=None)`` serves nightly runs, backfills, Flex Templates and
tests alike. Launch-time work (resolve the model version and verify its checksum, list
tranches and cut chunks, open the run record) happens before the graph is built, so
every worker scores the same files with the same model. ``build_pipeline`` only
attaches transforms; it never runs anything.

Graph (one fused stage after the chunk reshuffle, so memory stays flat in the input
size)::

    Read tranches -> Validate and preprocess -> Score batches -> Write prediction files
      -> Write to database;  all dead letters -> Write dead letters;
    stats of every stage -> Summarise run (one row in ``runs``, one JSON file)
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from models.registry import ModelRef, ModelRegistry, installed_sklearn_version, sha256_hex
from pipelines.config import Config
from pipelines.forkserver import ForkServer
from transforms.db import Database, backend_of, connect
from transforms.inference import DocBatchModelHandler, ScoreBatches
from transforms.ledger import BUSY, COMPLETED, FAILED, MISSING, RUN, SKIP, TrancheLedger
from transforms.limits import ThrottleTimer
from transforms.preprocess import PreprocessConfig
from transforms.read import (
    DEAD_LETTERS,
    STATS,
    Chunk,
    ReadTranches,
    TranchePlan,
    balanced_chunks,
    plan_tranches,
)
from transforms.sink import (
    DatabaseSession,
    RunContext,
    SinkSettings,
    WriteDeadLetters,
    WritePredictionFiles,
    WriteToDatabase,
    write_atomically,
)
from transforms.validate import ValidateAndPreprocess

_LOG = logging.getLogger(__name__)
COUNT_KEYS = ("read", "valid", "scored", "dead_lettered", "written")


class LaunchError(Exception):
    """The run cannot start: missing model, bad checksum, no input. Message says why."""


@dataclass
class ScorePlan:
    """What a run would do per tranche: run, skip (ledger), busy (leased) or missing."""

    dates: list[dt.date]
    tranches: list[TranchePlan]
    decisions: dict[str, tuple[str, str]] = field(default_factory=dict)
    chunks: list[Chunk] = field(default_factory=list)

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
    db = open_ledger_read_only(cfg) if read_only else open_database(cfg)
    try:
        ledger = TrancheLedger(db) if db is not None else None
        for t in plan.tranches:
            if t.missing:
                plan.decisions[t.tranche] = (MISSING, t.missing_reason)
            elif ledger is None:
                plan.decisions[t.tranche] = (RUN, "never scored (no ledger yet)")
            else:
                plan.decisions[t.tranche] = ledger.decide(
                    t.tranche, ref.name, ref.version, t.fingerprint(), cfg.force)
    finally:
        if db is not None:
            db.close()
    plan.cut_chunks(cfg)
    return plan


def open_ledger_read_only(cfg: Config) -> Database | None:
    """The database if it exists and has a ledger; None otherwise. Creates nothing."""
    if backend_of(cfg.db) == "sqlite":
        path = cfg.db.split("sqlite:///", 1)[-1]
        if not os.path.exists(path):
            return None
    db = connect(cfg.db, password_env=cfg.sink.password_env,
                 statement_timeout_ms=cfg.sink.statement_timeout_ms)
    probe = ("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'tranches'"
             if db.backend == "sqlite" else "SELECT to_regclass('tranches')")
    rows = db.execute(probe)
    if not rows or rows[0][0] is None:
        db.close()
        return None
    return db


def open_database(cfg: Config) -> Database:
    db = connect(cfg.db, password_env=cfg.sink.password_env,
                 statement_timeout_ms=cfg.sink.statement_timeout_ms)
    db.init_schema()
    return db


def files_of(t: TranchePlan) -> list[dict[str, Any]]:
    return [{"path": f.path, "size": f.size, "identity": f.fingerprint} for f in t.files]


def resolve_model(cfg: Config) -> ModelRef:
    """Fix the model version at launch and check the artifact's bytes (not unpickled)."""
    registry = ModelRegistry(cfg.registry)
    ref = registry.resolve(cfg.model)
    from apache_beam.io.filesystems import FileSystems

    path = f"{cfg.registry.rstrip('/')}/{ref.name}/{ref.version}/model.joblib"
    with FileSystems.open(path) as fh:
        actual = sha256_hex(fh.read())
    if actual != ref.sha256:
        raise LaunchError(
            f"model {ref.name}:{ref.version} failed verification: sha256 {actual} != registry "
            f"{ref.sha256}; refusing to score with an altered artifact"
        )
    recorded, installed = ref.metadata.get("sklearn_version"), installed_sklearn_version()
    if recorded != installed and not cfg.inference.allow_sklearn_mismatch:
        raise LaunchError(
            f"model {ref.name}:{ref.version} was saved with scikit-learn {recorded}, this "
            f"installation has {installed}; retrain or register it again, or set "
            "inference.allow_sklearn_mismatch to load it anyway"
        )
    return ref


def new_run_id() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ-") + secrets.token_hex(3)


LOCAL_RUNNERS = ("FnApiRunner", "DirectRunner", "TestDirectRunner")


def sink_settings(cfg: Config, beam_args: list[str] | None = None) -> SinkSettings:
    """Sink settings; a rate limit off one machine needs Redis or a fixed VM count."""
    machines = 1
    if cfg.runner not in LOCAL_RUNNERS and cfg.sink.max_rows_per_second and \
            not cfg.sink.redis_url:
        from apache_beam.options.pipeline_options import WorkerOptions

        workers = PipelineOptions(beam_args or []).view_as(WorkerOptions)
        machines = workers.max_num_workers or workers.num_workers or 0
        if not machines:
            raise LaunchError(
                "sink.max_rows_per_second on a distributed runner needs either "
                "sink.redis_url (one job-wide budget) or --max_num_workers (each worker VM "
                "then gets max_rows_per_second / max_num_workers)")
    return SinkSettings(
        url=cfg.db, batch_rows=cfg.sink.batch_rows, batch_bytes=cfg.sink.batch_bytes,
        max_rows_per_second=cfg.sink.max_rows_per_second, machines=machines,
        statement_timeout_ms=cfg.sink.statement_timeout_ms, max_retries=cfg.sink.max_retries,
        password_env=cfg.sink.password_env, payload_limit=cfg.validation.max_payload_chars,
        max_connections=cfg.sink.max_connections, redis_url=cfg.sink.redis_url,
        progress_seconds=cfg.progress_seconds,
    )


# ----------------------------------------------------------------- summarising
def merge_counts(counts: Iterable[dict[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for c in counts:
        for k, v in c.items():
            out[k] = out.get(k, 0) + v
    return out


def finalize_counts(per_tranche: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    """Fill every count (0 when absent) and derive valid = read - early dead letters."""
    out = {}
    for tranche, raw in sorted(per_tranche.items()):
        c = {k: 0 for k in COUNT_KEYS} | raw
        c["valid"] = (c["read"] - c.get("dead_read", 0) - c.get("dead_validate", 0)
                      - c.get("dead_preprocess", 0))
        out[tranche] = c
    return out


class _FinalizeRunFn(beam.DoFn):
    """Records the outcome: ``runs`` row, ledger rows, ``<output_dir>/_runs/<run_id>.json``.

    A tranche is marked completed in the ledger only when every record it read is
    accounted for (read == written + dead-lettered); otherwise it is marked failed and
    the next scheduled run scores it again.
    """

    def __init__(self, settings: SinkSettings, output_dir: str, run_id: str,
                 max_dead_letter_ratio: float, tranches: list[str]):
        self._settings = settings
        self._output_dir = output_dir.rstrip("/")
        self._run_id = run_id
        self._ratio = max_dead_letter_ratio
        self._tranches = tranches

    def process(self, per_tranche: dict[str, dict[str, int]]) -> Iterable[dict[str, Any]]:
        summary = summarise(self._run_id, {t: {} for t in self._tranches} | per_tranche,
                            self._ratio)
        session = DatabaseSession(self._settings, ThrottleTimer())
        try:
            session.run(lambda db: self._record(db, summary))
        finally:
            session.close()
        write_atomically(f"{self._output_dir}/_runs/{self._run_id}.json",
                         json.dumps(summary, indent=2).encode())
        yield summary

    def _record(self, db: Database, summary: dict[str, Any]) -> None:
        db.upsert_run(_existing_run_fields(db, self._run_id) | {
            "run_id": self._run_id, "status": summary["status"], "counts": json.dumps(summary),
            "finished_at": _now_iso(),
        })
        ledger = TrancheLedger(db)
        for tranche, c in summary["tranches"].items():
            complete = c["read"] == c["written"] + c["dead_lettered"]
            ledger.finish(self._run_id, tranche, COMPLETED if complete else FAILED, c)


def summarise(run_id: str, per_tranche: dict[str, dict[str, int]],
              max_ratio: float) -> dict[str, Any]:
    counts = finalize_counts(per_tranche)
    total = finalize_counts({"total": merge_counts(counts.values())})["total"]
    ratio = total["dead_lettered"] / total["read"] if total["read"] else 0.0
    status = "succeeded" if ratio <= max_ratio else "dead_letter_ratio_exceeded"
    return {"run_id": run_id, "status": status, "tranches": counts, "total": total,
            "dead_letter_ratio": round(ratio, 6)}


def _now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


def _existing_run_fields(db: Any, run_id: str) -> dict[str, Any]:
    rows = db.execute(
        f"SELECT started_at, config, model FROM runs WHERE run_id = {db.placeholder}", [run_id]
    )
    if not rows:
        return {"started_at": "", "config": "{}", "model": ""}
    return {"started_at": rows[0][0], "config": rows[0][1], "model": rows[0][2]}


class SummariseRun(beam.PTransform):
    """(tranche, counts) stats -> one summary dict, also stored in ``runs``."""

    def __init__(self, fn: _FinalizeRunFn):
        super().__init__()
        self._fn = fn

    def expand(self, stats: beam.PCollection) -> beam.PCollection:
        return (
            stats
            | "Sum per tranche" >> beam.CombinePerKey(merge_counts)
            | "Collect tranches" >> beam.combiners.ToDict()
            | "Record run" >> beam.ParDo(self._fn)
        )


# ----------------------------------------------------------------- the graph
def build_pipeline(p: beam.Pipeline, cfg: Config, plan: ScorePlan, ref: ModelRef,
                   run_id: str, beam_args: list[str] | None = None) -> beam.PCollection:
    """Attach the scoring transforms to ``p``; returns the summary PCollection."""
    pre = PreprocessConfig.from_dict(ref.metadata.get("preprocessing", {}))
    ctx = RunContext(
        run_id=run_id, model_name=ref.name, model_version=ref.version, model_sha256=ref.sha256,
        scored_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    )
    settings = sink_settings(cfg, beam_args)
    limit = cfg.validation.max_payload_chars
    handler = DocBatchModelHandler(
        cfg.registry, ref, top_k=cfg.inference.top_k,
        allow_sklearn_mismatch=cfg.inference.allow_sklearn_mismatch, payload_limit=limit,
        fast_text_features=cfg.inference.fast_text_features,
    )
    read = p | "Read tranches" >> ReadTranches(plan.chunks, cfg.fields, cfg.batch_size, limit)
    valid = read.batches | "Validate and preprocess" >> ValidateAndPreprocess(
        pre, cfg.validation.max_text_chars, limit)
    scored = valid.valid | "Score batches" >> ScoreBatches(
        handler, cfg.inference.timeout_seconds, limit)
    written = (
        scored["scored"]
        | "Write prediction files" >> WritePredictionFiles(cfg.output_dir, ctx)
        | "Write to database" >> WriteToDatabase(settings, ctx)
    )
    dead = (
        (read[DEAD_LETTERS], valid[DEAD_LETTERS], scored[DEAD_LETTERS], written[DEAD_LETTERS])
        | "Merge dead letters" >> beam.Flatten()
    )
    dead_stats = dead | "Write dead letters" >> WriteDeadLetters(settings, run_id, cfg.output_dir)
    fn = _FinalizeRunFn(settings, cfg.output_dir, run_id, cfg.max_dead_letter_ratio,
                        [t.tranche for t in plan.to_read])
    return (
        (read[STATS], written[STATS], dead_stats)
        | "Merge stats" >> beam.Flatten()
        | "Summarise run" >> SummariseRun(fn)
    )


def uses_fork_server(cfg: Config) -> bool:
    return cfg.runner == "FnApiRunner" and cfg.workers > 1 and cfg.local_engine == "fork"


def pipeline_options(cfg: Config, beam_args: list[str]) -> PipelineOptions:
    opts: dict[str, Any] = {"runner": cfg.runner}
    if cfg.runner in LOCAL_RUNNERS:
        opts["direct_num_workers"] = cfg.workers
        # With the fork server the workers come from our environment, not Beam's mode.
        parallel = cfg.workers > 1 and not uses_fork_server(cfg)
        opts["direct_running_mode"] = "multi_processing" if parallel else "in_memory"
    return PipelineOptions(beam_args, **opts)


def make_pipeline(cfg: Config, beam_args: list[str],
                  server: ForkServer | None) -> beam.Pipeline:
    """The pipeline to run; on the fork server's workers when one is given (which may
    still be importing: ``execute`` waits for it only just before running)."""
    options = pipeline_options(cfg, beam_args)
    if server is None:
        return beam.Pipeline(options=options)
    from apache_beam.runners.portability.fn_api_runner import fn_runner

    runner = fn_runner.FnApiRunner(default_environment=server.environment())
    return beam.Pipeline(runner=runner, options=options)


def start_run(cfg: Config, ref: ModelRef, run_id: str) -> None:
    db = open_database(cfg)
    try:
        db.upsert_run({
            "run_id": run_id, "started_at": _now_iso(), "finished_at": None,
            "status": "running", "config": json.dumps(cfg.to_dict(), sort_keys=True),
            "model": f"{ref.name}:{ref.version}", "counts": None,
        })
    finally:
        db.close()


def fail_run(cfg: Config, run_id: str, reason: str) -> None:
    db = connect(cfg.db, password_env=cfg.sink.password_env)
    try:
        db.upsert_run(_existing_run_fields(db, run_id) | {
            "run_id": run_id, "status": "failed", "finished_at": _now_iso(),
            "counts": json.dumps({"error": reason[:2000]}),
        })
        TrancheLedger(db).fail_run(run_id)
    finally:
        db.close()


def read_summary(cfg: Config, run_id: str) -> dict[str, Any] | None:
    db = connect(cfg.db, password_env=cfg.sink.password_env)
    try:
        rows = db.execute(f"SELECT counts FROM runs WHERE run_id = {db.placeholder}", [run_id])
    finally:
        db.close()
    if not rows or not rows[0][0]:
        return None
    data: dict[str, Any] = json.loads(rows[0][0])
    return data


def acquire_tranches(cfg: Config, plan: ScorePlan, ref: ModelRef, run_id: str) -> None:
    """Take a lease on every tranche to score; one another run holds becomes busy."""
    db = open_database(cfg)
    try:
        ledger = TrancheLedger(db)
        for t in plan.to_read:
            if not ledger.acquire(t.tranche, ref.name, ref.version, t.fingerprint(),
                                  files_of(t), run_id, cfg.sink.lease_seconds):
                entry = ledger.get(t.tranche, ref.name, ref.version)
                plan.decisions[t.tranche] = (BUSY, f"run {entry.run_id if entry else '?'} "
                                                   "took it first")
    finally:
        db.close()
    plan.cut_chunks(cfg)


class _LeaseKeeper(threading.Thread):
    """Renews the run's tranche leases every lease/3 seconds while the launcher waits."""

    def __init__(self, cfg: Config, run_id: str):
        super().__init__(name="beamscore-lease", daemon=True)
        self._cfg, self._run_id = cfg, run_id
        self._stop_event = threading.Event()

    def run(self) -> None:
        period = max(1.0, self._cfg.sink.lease_seconds / 3)
        while not self._stop_event.wait(period):
            try:
                db = connect(self._cfg.db, password_env=self._cfg.sink.password_env)
                try:
                    TrancheLedger(db).renew(self._run_id, self._cfg.sink.lease_seconds)
                finally:
                    db.close()
            except Exception as exc:  # noqa: BLE001 - retried at the next period
                _LOG.warning("could not renew tranche leases: %s", exc)

    def stop(self) -> None:
        self._stop_event.set()


@dataclass
class RunOutcome:
    run_id: str
    summary: dict[str, Any] | None
    wall_seconds: float
    plan: ScorePlan
    ref: ModelRef
    model_loads: int | None = None


def execute(cfg: Config, dates: list[dt.date], beam_args: list[str],
            test_pipeline: beam.Pipeline | None = None, wait: bool = True) -> RunOutcome:
    """Resolve and verify the model, plan, lease the tranches, build and run."""
    server = ForkServer() if uses_fork_server(cfg) and test_pipeline is None else None
    if server is not None:
        server.start()  # its imports overlap the planning below
    try:
        return _execute(cfg, dates, beam_args, test_pipeline, wait, server)
    finally:
        if server is not None:
            server.stop()


def _execute(cfg: Config, dates: list[dt.date], beam_args: list[str],
             test_pipeline: beam.Pipeline | None, wait: bool,
             server: ForkServer | None) -> RunOutcome:
    ref = resolve_model(cfg)
    plan = make_plan(cfg, dates, ref)
    run_id = new_run_id()
    if plan.to_read:
        acquire_tranches(cfg, plan, ref, run_id)
    if not plan.chunks:  # everything skipped, busy or missing: no run to start
        return RunOutcome(run_id="", summary=None, wall_seconds=0.0, plan=plan, ref=ref)
    start_run(cfg, ref, run_id)
    _LOG.info("run %s: model %s:%s, %d tranche(s), %d chunk(s)", run_id, ref.name,
              ref.version, len(plan.to_read), len(plan.chunks))
    started = time.monotonic()
    p = test_pipeline or make_pipeline(cfg, beam_args, server)
    keeper = _LeaseKeeper(cfg, run_id)
    keeper.start()
    try:
        build_pipeline(p, cfg, plan, ref, run_id, beam_args)
        if server is not None:
            server.wait_ready()  # the graph was built while its imports finished
        result = p.run()
        if wait:
            result.wait_until_finish()
    except BaseException as exc:
        fail_run(cfg, run_id, f"{type(exc).__name__}: {exc}")
        raise
    finally:
        keeper.stop()
    wall = time.monotonic() - started
    summary = read_summary(cfg, run_id) if wait else None
    loads = model_loads(result) if wait else None
    return RunOutcome(run_id=run_id, summary=summary, wall_seconds=wall, plan=plan, ref=ref,
                      model_loads=loads)


def model_loads(result: Any) -> int | None:
    """How many times workers loaded the model (RunInference's load-latency samples)."""
    from apache_beam.metrics.metric import MetricsFilter

    try:
        found = result.metrics().query(
            MetricsFilter().with_name("load_model_latency_milli_secs"))["distributions"]
    except Exception:  # noqa: BLE001 - a runner without metrics support
        return None
    return sum(d.committed.count for d in found if d.committed is not None)


def format_summary(outcome: RunOutcome) -> str:
    s = outcome.summary or {}
    lines = []
    if outcome.run_id:
        lines.append(f"run {outcome.run_id}  model {outcome.ref.name}:{outcome.ref.version}  "
                     f"status {s.get('status', 'unknown')}")
    lines.append(f"{'tranche':<12}{'read':>10}{'valid':>10}{'scored':>10}{'dead':>8}"
                 f"{'written':>10}  check")
    for tranche, c in (s.get("tranches") or {}).items():
        ok = "ok" if c["read"] == c["written"] + c["dead_lettered"] else "MISMATCH"
        lines.append(f"{tranche:<12}{c['read']:>10}{c['valid']:>10}{c['scored']:>10}"
                     f"{c['dead_lettered']:>8}{c['written']:>10}  {ok}")
    for decision in (SKIP, BUSY, MISSING):
        for t in outcome.plan.with_decision(decision):
            lines.append(f"{t.tranche:<12}  {decision}: {outcome.plan.decisions[t.tranche][1]}")
    total = s.get("total") or {}
    docs = total.get("read", 0)
    rate = docs / outcome.wall_seconds if outcome.wall_seconds else 0.0
    lines.append(
        f"{'total':<12}{docs:>10}{total.get('valid', 0):>10}{total.get('scored', 0):>10}"
        f"{total.get('dead_lettered', 0):>8}{total.get('written', 0):>10}"
    )
    lines.append(f"wall time {outcome.wall_seconds:.1f}s  {rate:,.0f} docs/s  "
                 f"dead-letter ratio {s.get('dead_letter_ratio', 0):.4f}  "
                 f"throttled {total.get('throttled_ms', 0) / 1000:.1f}s"
                 + (f"  model loads {outcome.model_loads}" if outcome.model_loads else ""))
    return "\n".join(lines)
