"""The scoring graph: attaches every step to a pipeline; never runs it.

One fused stage after the chunk reshuffle, so memory stays flat in the input size::

    Read tranches -> Validate and preprocess -> Score batches -> Write prediction files
      -> Write to database -> (ids written) Find duplicate ids;
    all dead letters -> Write dead letters;
    stats of every step -> Summarise run (one row in ``runs``, one JSON file)
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import apache_beam as beam

from models.predict import TimeLimit
from models.preprocess import PreprocessConfig
from models.registry import ModelRef
from pipelines.config import Config
from pipelines.launch import unpickle_policy
from pipelines.plan import ScorePlan
from transforms.dead_letters import WriteDeadLetters
from transforms.dedupe import FindDuplicateIds
from transforms.files import WritePredictionFiles
from transforms.read import ReadTranches
from transforms.records import DEAD_LETTERS, STATS, RunContext
from transforms.score import DocBatchModelHandler, ScoreBatches
from transforms.summarise import SummariseRun
from transforms.validate import ValidateAndPreprocess
from transforms.write import IDS, SinkSettings, WriteToDatabase


def time_limit(cfg: Config) -> TimeLimit | None:
    """The inference time limit per record, from whichever of the two keys is set."""
    if cfg.inference.timeout_ms_per_record:
        return TimeLimit(cfg.inference.timeout_ms_per_record / 1000)
    if cfg.inference.timeout_seconds:
        return TimeLimit(cfg.inference.timeout_seconds / cfg.batch_size)
    return None


def build_pipeline(p: beam.Pipeline, cfg: Config, plan: ScorePlan, ref: ModelRef,
                   run_id: str, sink: SinkSettings,
                   extra: dict[str, Any] | None = None) -> beam.PCollection:
    """Attach the scoring transforms to ``p``; returns the summary PCollection (with
    ``extra``, what the launch knew, in it)."""
    pre = PreprocessConfig.from_dict(ref.metadata.get("preprocessing", {}))
    ctx = RunContext(
        run_id=run_id, model_name=ref.name, model_version=ref.version, model_sha256=ref.sha256,
        scored_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    )
    limit = cfg.validation.max_payload_chars
    handler = DocBatchModelHandler(
        cfg.registry, ref, top_k=cfg.inference.top_k,
        allow_sklearn_mismatch=cfg.inference.allow_sklearn_mismatch, payload_limit=limit,
        fast_text_features=cfg.inference.fast_text_features, policy=unpickle_policy(cfg),
        time_limit=time_limit(cfg),
    )
    read = p | "Read tranches" >> ReadTranches(plan.chunks, cfg.fields, cfg.batch_size, limit)
    valid = read.batches | "Validate and preprocess" >> ValidateAndPreprocess(
        pre, cfg.validation.max_text_chars, limit)
    scored = valid.valid | "Score batches" >> ScoreBatches(handler, limit)
    written = (
        scored["scored"]
        | "Write prediction files" >> WritePredictionFiles(cfg.output_dir, ctx)
        | "Write to database" >> WriteToDatabase(sink, ctx)
    )
    duplicates = written[IDS] | "Find duplicate ids" >> FindDuplicateIds(
        cfg.output_dir, ctx, limit)
    dead = (
        (read[DEAD_LETTERS], valid[DEAD_LETTERS], scored[DEAD_LETTERS], written[DEAD_LETTERS],
         duplicates)
        | "Merge dead letters" >> beam.Flatten()
    )
    dead_stats = dead | "Write dead letters" >> WriteDeadLetters(sink, run_id, cfg.output_dir)
    return (
        (read[STATS], written[STATS], dead_stats)
        | "Merge stats" >> beam.Flatten()
        | "Summarise run" >> SummariseRun(sink.database, cfg.output_dir, run_id,
                                          cfg.max_dead_letter_ratio,
                                          [t.tranche for t in plan.to_read], extra)
    )
