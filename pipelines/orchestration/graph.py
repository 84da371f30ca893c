"""The scoring graph: attaches every step to a pipeline; never runs it.

One fused stage after the chunk reshuffle, so memory stays flat in the input size::

    Read tranches -> Validate and preprocess -> Score batches -> Write to database (rows,
      then each batch's prediction file) -> (ids written) Find duplicate ids;
    Score batches -> (batch statistics) Track tranches -> monitoring rows;
    all dead letters (refused links' too) -> Write dead letters;
    stats of every step -> Summarise run (one row in ``runs``, one JSON file)
      [-> Finish run: a job its launcher does not wait for finishes the run itself]
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import apache_beam as beam

from models.behaviour import FEATURES_FILE
from models.budget import TimeLimit
from models.preprocess import PreprocessConfig
from models.registry import ModelRef, ModelRegistry
from pipelines.configuration.config import InferenceConfig, TrackingConfig, ValidationConfig
from pipelines.orchestration.launch import tracking_policy, unpickle_policy
from pipelines.orchestration.plan import ScorePlan
from tracking.policy import IMPORTANCE_TOP
from transforms.dead_letters import WriteDeadLetters
from transforms.dedupe import FindDuplicateIds
from transforms.infer import TRACK, DocBatchModelHandler, ScoreBatches
from transforms.outcome import SummariseRun, Wave
from transforms.read import ReadTranches
from transforms.records import DEAD_LETTERS, STATS, FieldNames, RunContext
from transforms.refused import RefusedLinks
from transforms.track import TrackTranches
from transforms.validate import ValidateAndPreprocess
from transforms.write import IDS, SinkSettings, WriteToDatabase


@dataclass(frozen=True)
class GraphSettings:
    """What the scoring graph reads of the config (``settings_of(GraphSettings, cfg)``);
    the database comes with the sink's settings (``transforms.write.SinkSettings``)."""

    registry: str
    output_dir: str
    fields: FieldNames
    batch_size: int
    validation: ValidationConfig
    inference: InferenceConfig
    tracking: TrackingConfig
    max_dead_letter_ratio: float


def time_limit(inference: InferenceConfig, batch_size: int) -> TimeLimit | None:
    """The inference time limit per record, from whichever of the two keys is set."""
    if inference.timeout_ms_per_record:
        return TimeLimit(inference.timeout_ms_per_record / 1000)
    if inference.timeout_seconds:
        return TimeLimit(inference.timeout_seconds / batch_size)
    return None


def model_handler(graph: GraphSettings, ref: ModelRef, reference: dict[str, Any] | None
                  ) -> DocBatchModelHandler:
    """The ModelHandler of ``ref`` with the graph's inference and tracking settings."""
    inference, tracking = graph.inference, graph.tracking
    return DocBatchModelHandler(
        graph.registry, ref, top_k=inference.top_k,
        allow_sklearn_mismatch=inference.allow_sklearn_mismatch,
        payload_limit=graph.validation.max_payload_chars,
        fast_text_features=inference.fast_text_features, policy=unpickle_policy(inference),
        time_limit=time_limit(inference, graph.batch_size), tracking=tracking.enabled,
        labelled_sample=tracking.labelled_sample,
        importance_columns=[int(i) for i, _, _ in (reference or {}).get("importance_top", [])
                            [:IMPORTANCE_TOP]],
        permutation_rows=tracking.permutation_rows,
    )


def build_pipeline(p: beam.Pipeline, graph: GraphSettings, plan: ScorePlan, ref: ModelRef,
                   run_id: str, sink: SinkSettings, extra: dict[str, Any] | None = None,
                   reference: dict[str, Any] | None = None,
                   finish: Callable[[dict[str, Any]], Any] | None = None,
                   handler: DocBatchModelHandler | None = None,
                   wave: Wave | None = None) -> beam.PCollection:
    """Attach the scoring transforms to ``p``; returns the summary PCollection (with
    ``extra``, what the launch knew, in it). With tracking on, every tranche is profiled
    and compared with ``reference`` (the model's reference profile). ``finish``, when
    given, is called with the summary once the run and its monitoring rows are recorded
    (``pipelines.orchestration.finish.FinishInJob``). ``handler`` is the
    ``model_handler(graph, ref, reference)`` the caller made already, if it did.
    ``wave``: where ``plan`` (then one wave of the run's tranches) stands in its run."""
    pre = PreprocessConfig.from_dict(ref.metadata.get("preprocessing", {}))
    ctx = RunContext(
        run_id=run_id, model_name=ref.name, model_version=ref.version, model_sha256=ref.sha256,
        scored_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        fences=tuple(sorted(plan.fence.tokens.items())) if plan.fence else (),
    )
    limit = graph.validation.max_payload_chars
    handler = handler or model_handler(graph, ref, reference)
    read = p | "Read tranches" >> ReadTranches(plan.tasks, graph.fields, graph.batch_size,
                                               limit, graph.validation.max_text_chars)
    refused = p | "Refused links" >> RefusedLinks(plan.refused)
    valid = read.batches | "Validate and preprocess" >> ValidateAndPreprocess(
        pre, graph.validation.max_text_chars, limit)
    scored = valid.valid | "Score batches" >> ScoreBatches(handler, limit)
    written = scored["scored"] | "Write to database" >> WriteToDatabase(
        sink, ctx, graph.output_dir)
    tracked = []
    if graph.tracking.enabled:
        features = ModelRegistry(graph.registry).file_path(ref, FEATURES_FILE)
        tracked = [scored[TRACK] | "Track tranches" >> TrackTranches(
            sink.database, ctx, [str(c) for c in ref.metadata.get("classes", [])], reference,
            tracking_policy(graph.tracking, waves=wave.count if wave else 1), features)]
    duplicates = written[IDS] | "Find duplicate ids" >> FindDuplicateIds(
        graph.output_dir, ctx, limit)
    dead = (
        (read[DEAD_LETTERS], refused[DEAD_LETTERS], valid[DEAD_LETTERS], scored[DEAD_LETTERS],
         written[DEAD_LETTERS], duplicates)
        | "Merge dead letters" >> beam.Flatten()
    )
    dead_stats = dead | "Write dead letters" >> WriteDeadLetters(sink, run_id, graph.output_dir,
                                                                 fence=ctx.fence())
    summary = (
        (read[STATS], refused[STATS], written[STATS], dead_stats)
        | "Merge stats" >> beam.Flatten()
        | "Summarise run" >> SummariseRun(sink.database, graph.output_dir, run_id,
                                          graph.max_dead_letter_ratio,
                                          [t.tranche for t in plan.to_read], extra,
                                          fence=ctx.fence(), wave=wave)
    )
    if finish is not None:  # after the summary and every monitoring row are recorded
        after = [beam.pvalue.AsList(t) for t in tracked]
        _ = summary | "Finish run" >> beam.Map(lambda s, *_: finish(s), *after)
    return summary
