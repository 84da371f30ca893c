"""``run(argv, test_pipeline=None)``: score tranches, the one entry every caller shares.

The Flex Template entry, scheduled runs, backfills and tests call ``run`` with
``beamscore score``'s arguments; ``beamscore score`` parses them once, with the rest of
its command line, and calls ``run_parsed``. Both return the exit code
(``pipelines.orchestration.exit_codes``); the arguments are defined in
``pipelines.orchestration.run_arguments``. ``execute`` does the work: launch (``launch``),
build the graph (``graph``) on a pipeline of the configured runner (or the caller's test
pipeline), run it and read the summary the pipeline recorded.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import logging
import sys
import time
from typing import Any

import apache_beam as beam

from engine.construction import memoize_construction
from engine.forkserver import ForkServer
from engine.pickles import plain_operation_pickles
from pipelines.configuration.config import Config, load_config, settings_of
from pipelines.configuration.connection import opened
from pipelines.configuration.flags import overrides_from_args
from pipelines.orchestration.exit_codes import (
    EXIT_BUSY,
    EXIT_DEAD_LETTERS,
    EXIT_ERROR,
    EXIT_MISSING,
    EXIT_OK,
    EXIT_RETRAIN,
    EXIT_TEMPFAIL,
    guarded,
)
from pipelines.orchestration.finish import (
    FinishInJob,
    FinishSettings,
    finish,
    track_wave,
    warm_up,
)
from pipelines.orchestration.graph import GraphSettings, build_pipeline, model_handler
from pipelines.orchestration.launch import (
    LeaseKeeper,
    acquire_tranches,
    check_launch,
    clear_tranches,
    fail_run,
    finish_run,
    lost_leases,
    model_fields,
    record_exit_code,
    record_lease_lost,
    reference_of,
    require_model,
    resolve_model,
    run_summary,
    start_run,
)
from pipelines.orchestration.options import (
    RunnerSettings,
    beam_option_strings,
    fork_server,
    make_pipeline,
    stages_a_template,
    unknown_beam_args,
    with_beam_flags,
)
from pipelines.orchestration.plan import EMPTY, PlanSettings, ScorePlan, make_plan
from pipelines.orchestration.progress import ProgressReporter
from pipelines.orchestration.run_arguments import (
    parse_score_args,
    requested_dates,
    unrecognized,
)
from pipelines.orchestration.run_arguments import score_parser as score_parser  # the template's
from pipelines.orchestration.signals import Interrupted, deferred, interruptible, received
from pipelines.orchestration.summary import RunOutcome, format_summary, plan_summary
from store import run_records
from store.ledger import BUSY, MISSING, SKIP, Holder
from store.limits import StateUser
from store.monitoring import Trigger
from store.session import DatabaseSettings
from transforms.outcome import (
    INCOMPLETE,
    INPUT_CHANGED,
    RATIO_EXCEEDED,
    SUCCEEDED,
    Wave,
    dead_share,
    merge_counts,
)
from transforms.track import FAILURES as TRACKING_FAILURES
from transforms.write import SinkSettings

_LOG = logging.getLogger(__name__)


def run(argv: list[str] | None = None, test_pipeline: beam.Pipeline | None = None) -> int:
    """Score the tranches ``argv`` names (``beamscore score``'s arguments); print the
    summary; return the exit code. ``test_pipeline`` replaces the configured runner's
    pipeline (tests). SIGINT and SIGTERM stop the run cleanly (exit 130 / 143)."""
    parser, args, beam_args = parse_score_args(argv)
    return run_parsed(parser, args, beam_args, test_pipeline)


def run_parsed(parser: argparse.ArgumentParser, args: argparse.Namespace,
               beam_args: list[str], test_pipeline: beam.Pipeline | None = None) -> int:
    """``run`` of arguments already parsed (and checked) by ``parser``."""

    def score() -> int:
        cfg = load_config(args.config, overrides_from_args(args))
        require_model(cfg.model)
        sink = check_launch(cfg, beam_args)
        unknown = unknown_beam_args(beam_args) if beam_args else []
        if unknown:
            parser.error("unrecognized arguments (neither beamscore nor Beam options): "
                         + unrecognized(unknown, parser, known=beam_option_strings()))
        cfg = with_beam_flags(cfg, beam_args)  # the job's workers, as the flags set them
        outcome = execute(cfg, requested_dates(args, cfg.schedule.timezone), beam_args, sink,
                          test_pipeline)
        try:  # the run's record is final: a stop now waits for its summary and exit code
            with deferred():
                print(format_summary(outcome, cfg.max_dead_letter_ratio))
                code = exit_code(outcome, cfg.max_dead_letter_ratio)
                if outcome.run_id and not outcome.staged:
                    record_exit_code(cfg.database, outcome.run_id, code)
        except Interrupted as stop:
            stop.run_id, stop.ended = outcome.run_id, True
            raise
        return code

    try:
        with interruptible():
            return guarded(score)
    except Interrupted as stop:
        what = ("no run was started" if not stop.run_id else
                f"run {stop.run_id} had ended before the stop (its record, report and "
                "retraining decision stand)"
                if stop.ended else
                f"run {stop.run_id} marked failed (interrupted), its tranches released"
                if stop.recorded else f"run {stop.run_id} could not be marked failed "
                "(the database did not answer); its leases expire or the next run here "
                "takes them over")
        print(f"beamscore: stopped by {stop.name}: {what}", file=sys.stderr)
        return stop.exit_code


# The statuses a run's record ends with (``transforms.outcome``, ``store.run_records``).
_OUTCOMES = (SUCCEEDED, RATIO_EXCEEDED, INCOMPLETE, INPUT_CHANGED, run_records.SKIPPED,
             run_records.ABANDONED)


def exit_code(outcome: RunOutcome, max_dead_letter_ratio: float) -> int:
    """The exit code of a finished run, with one stderr line saying why when not 0. A
    job staged for a template launcher exits 0 (Dataflow's launcher submits the job only
    after a clean exit): missing and busy tranches are reported on stderr only."""
    plan, status = outcome.plan, (outcome.summary or {}).get("status")
    if outcome.staged:
        for decision in (MISSING, EMPTY, BUSY):
            if plan.with_decision(decision):
                print(f"beamscore: {decision} tranche(s), not in the staged job: "
                      + ", ".join(t.tranche for t in plan.with_decision(decision)),
                      file=sys.stderr)
        return EXIT_OK
    if status not in _OUTCOMES:  # a pipeline that ended without recording its outcome
        print(f"beamscore: run {outcome.run_id} ended without an outcome in its record "
              f"(status {status!r}): its tranches are left as the ledger has them "
              "(`beamscore runs show`)", file=sys.stderr)
        return EXIT_ERROR
    if status == run_records.ABANDONED and outcome.summary.get("error") == run_records.RELEASED:  # type: ignore[union-attr]
        print("beamscore: released by `beamscore runs release` while it ran: this run "
              "wrote nothing after that and stops; the tranches it had not finished are "
              "left failed", file=sys.stderr)
        return EXIT_BUSY
    if status == run_records.ABANDONED:
        print("beamscore: lease lost: another run took over tranche(s) "
              + ", ".join(outcome.summary.get("lost", [])) + " while this run was stopped; "  # type: ignore[union-attr]
              "this run wrote nothing after that and leaves them to it", file=sys.stderr)
        return EXIT_BUSY
    if status == run_records.SKIPPED and plan.with_decision(SKIP) and not (
            plan.missing or plan.empty or plan.with_decision(BUSY)):
        print("beamscore: nothing to do: every tranche is already scored with this model "
              "and these inputs (use --force to rescore)", file=sys.stderr)
    if status == INCOMPLETE:
        print("beamscore: records unaccounted for (read != written + dead-lettered); the "
              "tranches are left failed and will be scored again", file=sys.stderr)
        return EXIT_ERROR
    if status == INPUT_CHANGED:
        print("beamscore: input file(s) changed while the run read them: tranche(s) "
              + ", ".join(t for t, c in outcome.summary["tranches"].items()  # type: ignore[index]
                          if c.get("input_changed"))
              + " left failed, to be scored again once the files are final", file=sys.stderr)
        return EXIT_TEMPFAIL
    if status == RATIO_EXCEEDED:
        over = [t for t, c in outcome.summary["tranches"].items()  # type: ignore[index]
                if dead_share(c) > max_dead_letter_ratio]
        print(f"beamscore: dead-letter ratio {outcome.summary['dead_letter_ratio']:.4f} "  # type: ignore[index]
              f"(or a tranche's) exceeds max_dead_letter_ratio={max_dead_letter_ratio}; "
              + (f"tranche(s) {', '.join(over)} left failed" if over else
                 "the run's tranches are left failed"), file=sys.stderr)
        return EXIT_DEAD_LETTERS
    if plan.missing or plan.empty:
        for what, found in (("missing", plan.missing), ("empty", plan.empty)):
            if found:
                print(f"beamscore: {what} tranche(s): " + ", ".join(t.tranche for t in found)
                      + (" (files but no record; allow_empty_tranches: true completes them)"
                         if what == "empty" else ""), file=sys.stderr)
        return EXIT_MISSING
    if plan.with_decision(BUSY):
        print("beamscore: tranche(s) being scored by another run, left to it: "
              + ", ".join(t.tranche for t in plan.with_decision(BUSY)), file=sys.stderr)
        return EXIT_BUSY
    if outcome.retrain is not None:
        print(f"beamscore: retraining requested (trigger {outcome.retrain.trigger_id}): "
              + "; ".join(outcome.retrain.reasons), file=sys.stderr)
        return EXIT_RETRAIN
    return EXIT_OK


def execute(cfg: Config, dates: list[dt.date], beam_args: list[str], sink: SinkSettings,
            test_pipeline: beam.Pipeline | None = None) -> RunOutcome:
    """Launch, build the graph and run it; the outcome as the pipeline recorded it."""
    server = (fork_server(settings_of(RunnerSettings, cfg), cfg.tracking.enabled)
              if test_pipeline is None else None)
    if server is not None:
        server.start()  # its imports overlap the launch work below
    if cfg.tracking.enabled:
        warm_up()  # while the launcher waits for the fork server's imports
    state = StateUser(sink.database.identity, sink.database.state_dir)
    try:
        return _execute(cfg, dates, beam_args, sink, test_pipeline, server)
    finally:
        if server is not None:
            server.stop()
        state.close()


def _execute(cfg: Config, dates: list[dt.date], beam_args: list[str], sink: SinkSettings,
             test_pipeline: beam.Pipeline | None, server: ForkServer | None) -> RunOutcome:
    ref = resolve_model(cfg.registry, cfg.model, cfg.inference)
    cfg = dataclasses.replace(cfg, fields=model_fields(cfg.fields, cfg.explicit_keys, ref))
    settings = settings_of(PlanSettings, cfg)
    plan = make_plan(settings, dates, ref)
    run_id = run_records.new_run_id()
    start_run(cfg.database, ref, run_id, cfg.to_dict())
    try:
        staged = stages_a_template(beam_args)
        if plan.to_read:
            # A staged job outlives its launcher: its leases belong to no process here
            # (pid 0), so only their expiry or `beamscore runs release` frees them.
            # A run the launcher waits for clears each tranche as its wave starts.
            acquire_tranches(settings, plan, ref, run_id,
                             cfg.sink.detached_lease_seconds if staged else None,
                             Holder(Holder.this_process().host, 0) if staged else None,
                             clear=staged)
        if not plan.has_work:  # everything skipped, busy, missing or empty
            summary = {"run_id": run_id, "status": run_records.SKIPPED, "tranches": {},
                       "total": {}, **plan_summary(plan, ref)}
            finish_run(cfg.database, run_id, run_records.SKIPPED, summary)
            if staged:
                _stage_nothing(settings_of(RunnerSettings, cfg), run_id, beam_args,
                               test_pipeline)
                return RunOutcome(run_id, summary, 0.0, plan, ref, staged=staged)
            outcome = RunOutcome(run_id, summary, 0.0, plan, ref)
            # Nothing scored, nothing to track; the report still says why (every run has one).
            outcome.report = finish(settings_of(FinishSettings, cfg), ref, run_id, None, None)[1]
            return outcome
        if staged:
            return _stage_job(cfg, plan, ref, run_id, beam_args, sink, test_pipeline)
        return _run_pipeline(cfg, plan, ref, run_id, beam_args, sink, test_pipeline, server)
    except BaseException as exc:
        stop = exc if isinstance(exc, Interrupted) else received()
        if stop is None:
            _record_failure(cfg.database, run_id, f"{type(exc).__name__}: {exc}")
            raise
        stop.run_id = run_id
        marked = _record_failure(cfg.database, run_id, run_records.INTERRUPTED, stop.name)
        stop.recorded, stop.ended = marked is not None, marked is False
        raise stop from None


def _record_failure(database: DatabaseSettings, run_id: str, reason: str,
                    detail: str = "") -> bool | None:
    """Mark the run failed and free its leases: True, or False if the run had ended
    already (its record stands); if the database cannot be reached (None), say so and
    let the original error or stop signal end the run (its leases are then taken over
    when they expire, or at once by the next run on this host)."""
    try:
        return fail_run(database, run_id, reason, detail)
    except Exception as exc:  # noqa: BLE001 - the error that ended the run matters more
        _LOG.error("could not mark run %s failed (%s): %s", run_id, reason, exc)
        return None


def _run_pipeline(cfg: Config, plan: ScorePlan, ref: Any, run_id: str, beam_args: list[str],
                  sink: SinkSettings, test_pipeline: beam.Pipeline | None,
                  server: ForkServer | None) -> RunOutcome:
    """Run the plan's tranches in waves (``ScorePlan.waves``; a test pipeline runs once:
    one wave), one pipeline each on the same fork server and model; each wave completes
    its tranches, the last one records the run."""
    settings = settings_of(PlanSettings, cfg)
    waves = [plan] if test_pipeline is not None else plan.waves(
        cfg.wave_records, settings.read.chunk_bytes, settings.parallelism)
    _LOG.info("run %s: model %s:%s, %d tranche(s), %d chunk(s) in %d read task(s)%s", run_id,
              ref.name, ref.version, len(plan.to_read), sum(len(w.chunks) for w in waves),
              sum(len(w.tasks) for w in waves),
              f", in {len(waves)} waves" if len(waves) > 1 else "")
    started, database = time.monotonic(), cfg.database
    memoize_construction()
    plain_operation_pickles()  # a worker in this process (one worker) builds its operations
    keeper = LeaseKeeper(database, run_id)
    keeper.start()
    progress = ProgressReporter(database, cfg.progress_seconds, run_id,
                                [t.tranche for t in plan.to_read],
                                sum(c.est_rows for w in waves for c in w.chunks))
    progress.start()
    reference = reference_of(cfg.registry, ref, cfg.tracking.enabled)
    graph = settings_of(GraphSettings, cfg)
    handler = model_handler(graph, ref, reference)
    loads: int | None = None
    untracked = 0  # what tracking could not do, over the waves
    names = [[t.tranche for t in w.to_read] for w in waves]
    current = 0  # the wave running: the tranches of this one and later ones are the run's
    finishing = settings_of(FinishSettings, cfg)
    retrain: Trigger | None = None  # a request one of the waves made
    try:
        if server is not None:  # the model is loaded once, in the zygote, for every worker
            server.preload(handler.preload)
        for i, wave_plan in enumerate(waves):
            current, last = i, i == len(waves) - 1
            _stop_if_signalled()
            if len(waves) > 1:
                _LOG.info("run %s: wave %d of %d: %s to %s", run_id, i + 1, len(waves),
                          wave_plan.to_read[0].tranche, wave_plan.to_read[-1].tranche)
            assert plan.fence is not None  # the leases were taken (acquire_tranches)
            clear_tranches(settings, names[i], ref, plan.fence)
            wave = Wave(last=last, earlier=_earlier_counts(database, run_id)
                        if last and i else {}, count=len(waves))
            p = test_pipeline or make_pipeline(settings_of(RunnerSettings, cfg), beam_args,
                                               server)
            build_pipeline(p, graph, wave_plan, ref, run_id, sink, plan_summary(plan, ref),
                           reference, handler=handler, wave=wave)
            result = p.run()  # the runner waits for the fork server before its workers start
            try:
                result.wait_until_finish()
            except Interrupted:
                cancel_job(result)
                raise
            if (n := model_loads(result)) is not None:
                loads = (loads or 0) + n
            untracked += tracking_failures(result)
            if len(waves) > 1:  # its launcher-side figures and retraining decision
                retrain = _track_wave(finishing, ref, run_id, names[:i + 1], reference,
                                      len(waves), retrain)
            # Tranches of finished waves are done: another run may rescore them now.
            later = [t for group in names[i + 1:] for t in group]
            if later and (lost := lost_leases(database, plan, later)):
                return _lease_lost(database, plan, ref, run_id, lost, started)
        _stop_if_signalled()
    except Exception as failure:
        pending = [t for group in names[current:] for t in group]
        if lost := _lost_or_none(database, plan, failure, pending):
            return _lease_lost(database, plan, ref, run_id, lost, started)
        if (done := _released(database, run_id)) is not None:
            return _released_outcome(plan, ref, run_id, done, started)
        raise
    finally:
        keeper.stop()
        progress.stop()
    # Released after its last fenced write, the pipeline ended as if it had not been
    # (its closing writes change nothing of a released run): the release stands.
    if (done := _released(database, run_id)) is not None:
        return _released_outcome(plan, ref, run_id, done, started)
    summary = run_summary(database, run_id)
    # A run taken over while frozen may still end its pipeline; its record then says
    # abandoned (the outcome step changes nothing of a run that lost its tranches).
    if (summary or {}).get("error") == run_records.ABANDONED and \
            (lost := lost_leases(database, plan, names[-1])):
        return _lease_lost(database, plan, ref, run_id, lost, started)
    outcome = RunOutcome(run_id=run_id, summary=summary,
                         wall_seconds=time.monotonic() - started, plan=plan, ref=ref,
                         model_loads=loads, tracking_failures=untracked)
    outcome.retrain, outcome.report = finish(finishing, ref, run_id, outcome.summary,
                                             reference, track=len(waves) == 1)
    if len(waves) > 1:
        outcome.retrain = retrain
    return outcome


def _track_wave(cfg: FinishSettings, ref: Any, run_id: str, finished: list[list[str]],
                reference: dict[str, Any] | None, waves: int, retrain: Trigger | None
                ) -> Trigger | None:
    """``finish.track_wave`` of the last of the ``finished`` waves (their tranches), its
    counts as it recorded them; the run's request so far (``retrain``, else one this
    wave's decision made)."""
    with opened(cfg.database) as db:
        recorded = run_records.tranches_recorded(db, run_id)
    made = track_wave(cfg, ref, run_id, {t: recorded[t] for t in finished[-1] if t in recorded},
                      reference, waves, decide=retrain is None,
                      done={t for group in finished for t in group})
    return retrain or made


def _earlier_counts(database: DatabaseSettings, run_id: str) -> dict[str, dict[str, int]]:
    """The counts of the tranches the run's earlier waves finished, as they recorded them."""
    with opened(database) as db:
        return run_records.waves_recorded(db, run_id)


def _stop_if_signalled() -> None:
    """Raise the stop signal that arrived, if its exception was lost (raised where
    Python ignores exceptions, e.g. in a garbage collector's callback): checked at each
    wave's start and after the last."""
    if (stop := received()) is not None:
        raise stop


def _lost_or_none(database: DatabaseSettings, plan: ScorePlan, failure: BaseException,
                  pending: list[str]) -> list[str]:
    """The tranches among ``pending`` (those of the failed wave and later ones) that
    another run took over, when that is why the pipeline failed; a database that does
    not answer now leaves the pipeline's own error to be raised."""
    try:
        return lost_leases(database, plan, pending)
    except Exception as exc:  # noqa: BLE001 - the pipeline's error is the one to report
        _LOG.warning("could not check the run's leases after %s: %s",
                     type(failure).__name__, exc)
        return []


def _released(database: DatabaseSettings, run_id: str) -> dict[str, Any] | None:
    """If ``beamscore runs release`` failed the run while it ran (its fenced writes then
    fail: the reason the pipeline failed), the counts of the tranches its finished
    waves completed; else None."""
    try:
        with opened(database, window=30) as db:
            record = run_records.get(db, run_id)
    except Exception:  # noqa: BLE001 - the pipeline's error is the one to report
        return None
    if record is None or record.error != run_records.RELEASED:
        return None
    return dict((record.counts or {}).get("tranches") or {})


def _released_outcome(plan: ScorePlan, ref: Any, run_id: str, done: dict[str, Any],
                      started: float) -> RunOutcome:
    """The outcome of a run ``beamscore runs release`` failed while it ran: abandoned,
    with the counts of the tranches its finished waves completed (``done``)."""
    return RunOutcome(run_id=run_id, summary={
        "run_id": run_id, "status": run_records.ABANDONED, "error": run_records.RELEASED,
        "tranches": done, "total": merge_counts(done.values())},
        wall_seconds=time.monotonic() - started, plan=plan, ref=ref)


def _lease_lost(database: DatabaseSettings, plan: ScorePlan, ref: Any, run_id: str,
                lost: list[str], started: float) -> RunOutcome:
    """Another run took over tranches of this one (it was frozen past its leases): its
    fenced writes wrote nothing since; it ends ``abandoned`` without touching them."""
    _LOG.error("run %s lost the lease of tranche(s) %s to another run; stopping without "
               "writing", run_id, ", ".join(lost))
    return RunOutcome(run_id=run_id, summary=record_lease_lost(database, run_id, lost),
                      wall_seconds=time.monotonic() - started, plan=plan, ref=ref)


def _stage_job(cfg: Config, plan: ScorePlan, ref: Any, run_id: str, beam_args: list[str],
               sink: SinkSettings, test_pipeline: beam.Pipeline | None) -> RunOutcome:
    """Stage the job for a Flex Template launcher, which submits it after this process
    exits: the job records its own summary, leases and monitoring rows, then finishes
    the run (``FinishInJob``); its leases last ``sink.detached_lease_seconds``."""
    started = time.monotonic()
    p = test_pipeline or make_pipeline(settings_of(RunnerSettings, cfg), beam_args, None)
    reference = reference_of(cfg.registry, ref, cfg.tracking.enabled)
    build_pipeline(p, settings_of(GraphSettings, cfg), plan, ref, run_id, sink,
                   plan_summary(plan, ref), reference,
                   finish=FinishInJob(settings_of(FinishSettings, cfg), ref, run_id,
                                      reference))
    p.run()
    _LOG.info("run %s: job staged for the template launcher; it finishes the run itself "
              "(beamscore runs show %s)", run_id, run_id)
    return RunOutcome(run_id=run_id, summary=None, wall_seconds=time.monotonic() - started,
                      plan=plan, ref=ref, staged=True)


def _stage_nothing(runner: RunnerSettings, run_id: str, beam_args: list[str],
                   test_pipeline: beam.Pipeline | None) -> None:
    """A template launch must stage a job, or Dataflow fails the launch: with nothing to
    score (every tranche skipped, busy or missing) the job does nothing."""
    p = test_pipeline or make_pipeline(runner, beam_args, None)
    _ = p | "Nothing to score" >> beam.Create([run_id]) | beam.Map(lambda _: None)
    p.run()


def cancel_job(result: Any) -> None:
    """Cancel a job that runs elsewhere (Dataflow, a portable job service) when the
    launcher is stopped; a local pipeline has no job left once its workers are gone."""
    from apache_beam.runners.runner import PipelineState

    try:
        if not PipelineState.is_terminal(result.state):
            result.cancel()
            _LOG.warning("job cancelled")
    except (AttributeError, NotImplementedError):
        pass  # a runner that cannot cancel (the local engine stops with its workers)
    except Exception as exc:  # noqa: BLE001 - the stop goes on; say what is left running
        _LOG.warning("could not cancel the job: %s; cancel it by hand", exc)


def model_loads(result: Any) -> int | None:
    """How many times workers loaded the model (RunInference's load-latency samples)."""
    found = _metric(result, "load_model_latency_milli_secs", "distributions")
    if found is None:
        return None
    return sum(d.committed.count for d in found if d.committed is not None)


def tracking_failures(result: Any) -> int:
    """How many things tracking could not do (``transforms.track``); 0 where the runner
    has no metrics."""
    return sum(int(c.committed or 0) for c in _metric(result, TRACKING_FAILURES, "counters")
               or [])


def _metric(result: Any, name: str, kind: str) -> list[Any] | None:
    """The job's ``kind`` results of the metric ``name``; None where the runner has no
    metrics."""
    from apache_beam.metrics.metric import MetricsFilter

    try:
        return list(result.metrics().query(MetricsFilter().with_name(name))[kind])
    except Exception:  # noqa: BLE001 - a runner without metrics support
        return None
