"""Score batches: valid DocBatches in, DocBatches with predictions out, on RunInference.

``DocBatchModelHandler`` is a Beam ``ModelHandler`` whose "batch" is a whole DocBatch
(RunInference's own batching is skipped: the reader already cuts batches of
``batch_size``). RunInference loads the model once per worker process through
``shared.Shared`` and calls ``run_inference`` with one vectorised ``predict_proba``
per batch (featurisation vectorised by ``models.fastpath`` for word n-gram TF-IDF
pipelines, bit-identical to scikit-learn). When a batch raises, returns non-finite
probabilities or exceeds its time limit, it is bisected so that only the records
that fail on their own are dead-lettered (stage ``inference``) and the rest are
scored; with a time limit each call runs in a child process that is killed when the
limit passes (``models.predict``), so a hung model holds no thread and no core. A
batch RunInference gives up on as a whole (the worker's own failure) is
dead-lettered whole.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.ml.inference.base import ModelHandler, RunInference

from models.fastpath import FastTextPipeline, unsupported_reason
from models.predict import TimeLimit, predict_with_isolation, top_k_columns
from models.registry import ModelRef, ModelRegistry
from models.unpickle import Policy
from transforms.records import (
    DEAD_LETTERS,
    PRED_LABEL,
    PRED_SCORE,
    PRED_TOP_K,
    TEXT,
    DocBatch,
    dead_letters_from_frame,
)

_LOG = logging.getLogger(__name__)


class DocBatchModelHandler(ModelHandler[DocBatch, DocBatch, Any]):
    """Loads a verified registry model; scores a DocBatch per call.

    ``run_inference`` returns one pair: the batch with three prediction columns added,
    and the dead letters of the records that could not be scored; the ``ScoreBatches``
    transform splits the two.
    """

    def __init__(
        self,
        registry_root: str,
        ref: ModelRef,
        *,
        top_k: int,
        allow_sklearn_mismatch: bool = False,
        payload_limit: int = 2000,
        fast_text_features: bool = True,
        policy: Policy | None = None,
        time_limit: TimeLimit | None = None,
    ):
        super().__init__()
        self._registry_root = registry_root
        self._ref = ref
        self._top_k = top_k
        self._allow = allow_sklearn_mismatch
        self._payload_limit = payload_limit
        self._fast = fast_text_features
        self._policy = policy or Policy()
        self._limit = time_limit

    def load_model(self) -> Any:
        """The verified model; wrapped in ``FastTextPipeline`` (same probabilities,
        vectorised featurisation) when enabled and the model qualifies."""
        model = ModelRegistry(self._registry_root).load(self._ref, self._allow, self._policy)
        if self._fast:
            reason = unsupported_reason(model)
            if reason is None:
                return FastTextPipeline(model)
            _LOG.info("model %s:%s scored by scikit-learn directly: %s",
                      self._ref.name, self._ref.version, reason)
        return model

    def run_inference(
        self,
        batch: Sequence[DocBatch],
        model: Any,
        inference_args: dict[str, Any] | None = None,
    ) -> Iterable[Any]:
        doc_batch: DocBatch = batch  # type: ignore[assignment]  # pre-batched (no batching)
        frame = doc_batch.frame
        probs, errors = predict_with_isolation(model, frame[TEXT].tolist(), self._limit)
        dead: list[dict[str, Any]] = []
        if errors:
            bad = np.zeros(len(frame), dtype=bool)
            bad[list(errors)] = True
            dead = dead_letters_from_frame(
                doc_batch, frame[bad], "inference",
                [errors[i] for i in sorted(errors)], self._payload_limit,
            )
            frame, probs = frame[~bad], probs[~bad]
        if len(frame):
            labels, scores, top_k = top_k_columns(probs, model.classes_, self._top_k)
            frame = frame.reset_index(drop=True)
            frame[PRED_LABEL] = labels
            frame[PRED_SCORE] = scores
            frame[PRED_TOP_K] = top_k
        return [(doc_batch.with_frame(frame), dead)]

    def get_num_bytes(self, batch: Sequence[DocBatch]) -> int:
        doc_batch: DocBatch = batch  # type: ignore[assignment]
        return int(doc_batch.frame[TEXT].str.len().sum())

    def should_skip_batching(self) -> bool:
        return True

    def get_metrics_namespace(self) -> str:
        return "beamscore"


class _SplitScoredFn(beam.DoFn):
    def process(self, element: tuple[DocBatch, list[dict[str, Any]]]) -> Iterator[Any]:
        scored, dead = element
        for dl in dead:
            yield beam.pvalue.TaggedOutput(DEAD_LETTERS, dl)
        if len(scored):
            yield scored


class _FailedBatchFn(beam.DoFn):
    """A batch RunInference gave up on (timeout, crash): every record dead-lettered."""

    def __init__(self, payload_limit: int):
        self._payload_limit = payload_limit

    def process(self, failed: tuple[DocBatch, Any]) -> Iterator[dict[str, Any]]:
        batch, exc = failed
        reason = f"inference failed for the whole batch: {type(exc).__name__}: {exc}"[:500]
        yield from dead_letters_from_frame(
            batch, batch.frame, "inference", [reason] * len(batch), self._payload_limit
        )


class ScoreBatches(beam.PTransform):
    """Valid DocBatches -> scored DocBatches (main) + ``dead_letters``."""

    def __init__(self, handler: DocBatchModelHandler, payload_limit: int = 2000):
        super().__init__()
        self._handler = handler
        self._payload_limit = payload_limit

    def expand(self, batches: beam.PCollection) -> dict[str, beam.PCollection]:
        results, failed = (
            batches
            | "Predict per batch" >> RunInference(self._handler).with_exception_handling()
        )
        scored = results | "Split scored and rejected" >> beam.ParDo(
            _SplitScoredFn()
        ).with_output_types(DocBatch).with_outputs(DEAD_LETTERS, main="scored")
        whole = failed.failed_inferences | "Reject failed batches" >> beam.ParDo(
            _FailedBatchFn(self._payload_limit)
        )
        dead = (scored[DEAD_LETTERS], whole) | "Merge inference dead letters" >> beam.Flatten()
        return {"scored": scored.scored, DEAD_LETTERS: dead}
