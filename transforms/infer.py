"""Score batches: valid DocBatches in, DocBatches with predictions out, on RunInference.

``DocBatchModelHandler`` is a Beam ``ModelHandler`` whose "batch" is a whole DocBatch
(RunInference's own batching is skipped: the reader already cuts batches of
``batch_size``). RunInference loads the model once per worker process through
``shared.Shared`` and calls ``run_inference`` with one vectorised ``predict_proba``
per batch (featurisation vectorised by ``models.fastpath`` for word n-gram TF-IDF
pipelines, bit-identical to scikit-learn). When a batch raises, returns non-finite
probabilities or exceeds its time limit, it is bisected so that only the records
that fail on their own are dead-lettered (stage ``inference``) and the rest are
scored. Every call into the model's code for a batch (its own vectoriser, scoring,
the permutation importance of tracking) goes through the batch's
``models.budget.ModelCalls``: with a time limit each runs in a child process that is
killed when its limit passes, all of them within the batch's time budget, so a hung
or slow model holds no thread and no core and a batch ends in bounded time. A batch
RunInference gives up on as a whole (the worker's own failure) is dead-lettered whole.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import apache_beam as beam
import numpy as np
import pandas as pd
from apache_beam import typehints
from apache_beam.ml.inference.base import ModelHandler, RunInference

from models.behaviour import batch_stats
from models.budget import ModelCalls, TimeLimit
from models.fastpath import FastTextPipeline, unsupported_reason
from models.importance import (
    ImportanceMeasure,
    TextFeatures,
    features_within,
    measure_for,
    text_features,
)
from models.predict import predict_with_isolation, top_k_columns, warm_input_validation
from models.registry import ModelRef, ModelRegistry
from models.unpickle import Policy
from tracking.profile import UNKNOWN_LABEL, BatchStats, label_reader, label_texts
from transforms.records import (
    DEAD_LETTERS,
    DOC_ID,
    LABEL,
    PRED_LABEL,
    PRED_SCORE,
    PRED_TOP_K,
    TEXT,
    DocBatch,
    dead_letters_from_frame,
)

_LOG = logging.getLogger(__name__)
TRACK = "track"  # (tranche, BatchStats) of each scored batch, when tracking is on
# What the model handler returns per batch: the scored batch, its dead letters, its stats.
SCORED = typehints.Tuple[DocBatch, typehints.Any, typehints.Optional[BatchStats]]
_SAMPLE_KEY = "beamscore-labels"  # siphash key (16 bytes) of tracking.labelled_sample


# Models loaded into this process by ``DocBatchModelHandler.preload`` (the fork
# server's zygote, before it forks the workers that inherit them), by what loaded them.
_PRELOADED: dict[tuple[Any, ...], Any] = {}


class DocBatchModelHandler(ModelHandler[DocBatch, DocBatch, Any]):
    """Loads a verified registry model; scores a DocBatch per call.

    ``run_inference`` returns one triple: the batch with three prediction columns added,
    the dead letters of the records that could not be scored, and with ``tracking`` the
    batch's ``BatchStats`` (else None); the ``ScoreBatches`` transform splits them.
    ``importance_columns`` (the reference's top features) are the columns permuted for
    a model without coefficients, on ``permutation_rows`` rows of each batch.
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
        tracking: bool = False,
        labelled_sample: float = 1.0,
        importance_columns: Sequence[int] = (),
        permutation_rows: int = 32,
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
        self._tracking = tracking
        self._labelled_sample = labelled_sample
        self._importance_columns = list(importance_columns)
        self._permutation_rows = permutation_rows
        self._measures: dict[int, ImportanceMeasure | None] = {}  # id(model) -> its measure

    def load_model(self) -> Any:
        """The verified model; wrapped in ``FastTextPipeline`` (same probabilities,
        vectorised featurisation) when enabled and the model qualifies. A model this
        process inherited from ``preload`` with the same settings is that model."""
        found = _PRELOADED.get(self._load_key())
        return found if found is not None else self._load()

    def preload(self) -> None:
        """Load the model into this process for the workers forked from it later (the
        fork server's zygote: ``engine.forkserver.ForkServer.preload``), and do here once
        what scikit-learn's first input check does in each process."""
        model = self._load()
        _PRELOADED[self._load_key()] = model
        try:
            warm_input_validation()
        except Exception as exc:  # noqa: BLE001 - each worker then does it on its first batch
            _LOG.warning("scikit-learn's input check not warmed for the workers: %s: %s",
                         type(exc).__name__, exc)

    def _load_key(self) -> tuple[Any, ...]:
        """Everything ``_load`` depends on."""
        return (self._registry_root, self._ref.name, self._ref.version, self._ref.sha256,
                self._allow, self._fast, self._policy.trusted_types,
                self._policy.allow_pickle)

    def _load(self) -> Any:
        model = ModelRegistry(self._registry_root).load(self._ref, self._allow, self._policy)
        if self._fast:
            reason = unsupported_reason(model)
            if reason is None:
                # Its lookup tables built now, once, by the loading thread: pandas builds
                # them on first use, and the bundles a process runs at once on threads
                # (Dataflow's harness threads) share the loaded model.
                fast = FastTextPipeline(model)
                fast.warm()
                return fast
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
        texts = frame[TEXT].tolist()
        calls = ModelCalls(self._limit, len(texts))  # every call into the model's code
        features = self._features(model, texts, calls) if self._tracking else None
        scorer, inputs = (features.scorer, features.matrix) if features else (model, texts)
        probs, errors = predict_with_isolation(scorer, inputs, calls)
        dead: list[dict[str, Any]] = []
        keep = np.ones(len(frame), dtype=bool)  # the records the model scored
        if errors:
            keep[list(errors)] = False
            dead = dead_letters_from_frame(
                doc_batch, frame[~keep], "inference",
                [errors[i] for i in sorted(errors)], self._payload_limit,
            )
            frame, probs = frame[keep], probs[keep]
        stats = None
        if len(frame):
            labels, scores, top_k = top_k_columns(probs, model.classes_, self._top_k)
            frame = frame.reset_index(drop=True)
            frame[PRED_LABEL] = labels
            frame[PRED_SCORE] = scores
            frame[PRED_TOP_K] = top_k
            if features is not None:
                stats = batch_stats(
                    probs, features, keep, frame[TEXT].str.len().to_numpy(),
                    _true_labels(frame, model.classes_, self._labelled_sample),
                    self._measure(model), frame[DOC_ID].to_numpy(), calls)
        return [(doc_batch.with_frame(frame), dead, stats)]

    def _features(self, model: Any, texts: list[str], calls: ModelCalls
                  ) -> TextFeatures | None:
        """The batch's features for tracking, or None (then the model is scored on the
        texts, untracked). A model's own vectoriser (third-party code: not the fast
        path's) runs under the batch's ``calls``, as its ``predict_proba`` does."""
        try:
            if not isinstance(model, FastTextPipeline):
                return features_within(model, texts, calls)
            return text_features(model, texts)
        except Exception:  # noqa: BLE001 - scored record by record, untracked
            return None

    def _measure(self, model: Any) -> ImportanceMeasure | None:
        if id(model) not in self._measures:
            self._measures[id(model)] = measure_for(model, self._importance_columns,
                                                    self._permutation_rows)
        return self._measures[id(model)]

    def get_num_bytes(self, batch: Sequence[DocBatch]) -> int:
        doc_batch: DocBatch = batch  # type: ignore[assignment]
        return int(doc_batch.frame[TEXT].str.len().sum())

    def should_skip_batching(self) -> bool:
        return True

    def get_metrics_namespace(self) -> str:
        return "beamscore"


def _true_labels(frame: Any, classes: Any, labelled_sample: float) -> np.ndarray:
    """Class index of each row's true label, compared as text whatever its JSON type;
    -1 without one (``has_label``: blank text is none either), or outside the sample;
    UNKNOWN_LABEL for one that is none of the model's classes."""
    labels = frame[LABEL]
    known = labels.notna().to_numpy()
    true = np.full(len(frame), -1, dtype=np.int64)
    if known.any():  # codes are -1 for a label that is not one of the model's classes
        read = label_reader(classes)
        texts = label_texts(labels[known], read)
        codes = pd.Categorical(texts, categories=label_texts(classes, read)).codes
        codes = np.where(codes < 0, UNKNOWN_LABEL, codes)
        for i in np.flatnonzero(codes == UNKNOWN_LABEL):  # no class is blank
            if not texts[i].strip():
                codes[i] = -1
        true[known] = codes
    if labelled_sample < 1.0:
        h = pd.util.hash_array(frame[DOC_ID].astype(str).to_numpy(), hash_key=_SAMPLE_KEY)
        true[(h % 1_000_000) >= labelled_sample * 1_000_000] = -1
    return true


class _SplitScoredFn(beam.DoFn):
    def process(self, element: tuple[DocBatch, list[dict[str, Any]], BatchStats | None]
                ) -> Iterator[Any]:
        scored, dead, stats = element
        for dl in dead:
            yield beam.pvalue.TaggedOutput(DEAD_LETTERS, dl)
        if stats is not None:
            yield beam.pvalue.TaggedOutput(TRACK, (scored.tranche, stats))
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
        # RunInference declares no output type: typed here, so that Beam codes (and
        # estimates the size of) the batch and its statistics with their own coders.
        results.element_type = SCORED
        scored = results | "Split scored and rejected" >> beam.ParDo(
            _SplitScoredFn()
        ).with_output_types(DocBatch, **{TRACK: typehints.Tuple[str, BatchStats],
                                         DEAD_LETTERS: typehints.Any}).with_outputs(
            DEAD_LETTERS, TRACK, main="scored")
        whole = failed.failed_inferences | "Reject failed batches" >> beam.ParDo(
            _FailedBatchFn(self._payload_limit)
        )
        dead = (scored[DEAD_LETTERS], whole) | "Merge inference dead letters" >> beam.Flatten()
        return {"scored": scored.scored, DEAD_LETTERS: dead, TRACK: scored[TRACK]}
