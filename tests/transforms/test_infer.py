"""ScoreBatches on RunInference: scoring, dead letters, one model load, time limit."""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to
from sklearn.pipeline import Pipeline

from landing.samples import make_docs
from models.budget import TimeLimit
from models.fastpath import FastTextPipeline
from models.preprocess import PreprocessConfig, preprocess_texts
from models.registry import ModelRegistry, RegistryError
from models.unpickle import Policy
from tests.doubles import (
    TRUSTED,
    CountingPipeline,
    HangingPipeline,
    PoisonedPipeline,
    slow_pipeline,
)
from transforms import infer
from transforms.infer import TRACK, DocBatchModelHandler, ScoreBatches
from transforms.records import (
    DEAD_LETTERS,
    DOC_ID,
    POSITION,
    PRED_LABEL,
    PRED_SCORE,
    PRED_TOP_K,
    SOURCE,
    TEXT,
)


def _docs_batch(make_batch: Any, n: int, seed: int, key: str, poisoned: set[int] = frozenset(),
                source: str = "/in/dt=2026-01-01/part-0.jsonl") -> Any:
    rows = list(make_docs(n, seed=seed, prefix=key))
    for i in poisoned:
        rows[i]["text"] = "POISON " + rows[i]["text"]
    return make_batch(rows, source_file=source, batch_key=key)


def _register(factory: pytest.TempPathFactory, name: str, model: Any) -> tuple[str, Any]:
    """A fresh registry holding ``model`` as ``name``; (root, ref)."""
    root = str(factory.mktemp(f"{name}-registry"))
    ref = ModelRegistry(root).register(
        name, model, preprocessing=PreprocessConfig().to_dict(), source="test",
        policy=Policy(TRUSTED))
    return root, ref


@pytest.fixture(scope="module")
def poisoned_registry(tmp_path_factory: pytest.TempPathFactory, trained_model: Any) -> Any:
    return _register(tmp_path_factory, "poisoned", PoisonedPipeline(trained_model))


def test_score_batches_scores_clean_rows_and_dead_letters_poisoned(
        pipeline: Any, make_batch: Any, poisoned_registry: Any, trained_model: Any) -> None:
    root, ref = poisoned_registry
    batches = [_docs_batch(make_batch, 12, 1, "b1", {0, 7}),
               _docs_batch(make_batch, 9, 2, "b2", source="/in/dt=2026-01-01/part-1.jsonl"),
               _docs_batch(make_batch, 5, 3, "b3", {0, 1, 2, 3, 4})]
    clean, poisoned = [], []
    for b in batches:
        for doc_id, text, pos, source in zip(b.frame[DOC_ID], b.frame[TEXT], b.frame[POSITION],
                                             b.frame[SOURCE]):
            (poisoned if "POISON" in text else clean).append((doc_id, text, pos, source))
    classes = [str(c) for c in trained_model.classes_]
    expected_probs = trained_model.predict_proba([t for _, t, _, _ in clean])
    expected = [
        (doc_id, classes[int(np.argmax(p))]) for (doc_id, *_), p in zip(clean, expected_probs)
    ]
    handler = DocBatchModelHandler(root, ref, top_k=3, policy=Policy(TRUSTED))

    def check_columns(scored: list[Any]) -> None:
        assert {b.batch_key for b in scored} == {"b1", "b2"}, "all-poisoned batch not emitted"
        for b in scored:
            f = b.frame
            for label, score, top_k in zip(f[PRED_LABEL], f[PRED_SCORE], f[PRED_TOP_K]):
                top = json.loads(top_k)
                assert len(top) == 3
                assert top[0][0] == label
                assert top[0][1] == pytest.approx(score, abs=1e-6)
                assert [s for _, s in top] == sorted((s for _, s in top), reverse=True)
                assert 0.0 < score <= 1.0

    with pipeline as p:
        out = p | beam.Create(batches) | ScoreBatches(handler, 500)
        labels = out["scored"] | beam.FlatMap(
            lambda b: zip(b.frame[DOC_ID].tolist(), b.frame[PRED_LABEL].tolist()))
        assert_that(labels, equal_to(expected), label="labels")
        assert_that(out["scored"], check_columns, label="columns")
        dead = out[DEAD_LETTERS] | beam.Map(
            lambda d: (d["position"], d["source_file"], d["stage"],
                       "model crashed on poisoned text" in d["reason"]))
        assert_that(dead, equal_to([(pos, src, "inference", True)
                                    for _, _, pos, src in poisoned]), label="dead")


def test_tracked_batches_profile_only_the_records_the_model_scored(
        pipeline: Any, make_batch: Any, poisoned_registry: Any, trained_model: Any) -> None:
    root, ref = poisoned_registry
    batches = [_docs_batch(make_batch, 12, 1, "b1", {0, 7}), _docs_batch(make_batch, 9, 2, "b2")]
    classes = [str(c) for c in trained_model.classes_]
    clean = [t for b in batches for t in b.frame[TEXT] if "POISON" not in t]
    predicted = np.argmax(trained_model.predict_proba(clean), axis=1)
    expected = np.bincount(predicted, minlength=len(classes)).tolist()
    handler = DocBatchModelHandler(root, ref, top_k=3, policy=Policy(TRUSTED), tracking=True)

    def counts(stats: list[Any]) -> list[int]:
        return np.sum([np.bincount(s.predicted, minlength=len(classes)) for _, s in stats],
                      axis=0).tolist()

    with pipeline as p:
        out = p | beam.Create(batches) | ScoreBatches(handler, 500)
        assert_that(out[TRACK] | beam.combiners.ToList() | beam.Map(counts),
                    equal_to([expected]), label="class counts")
        assert_that(out[TRACK] | beam.Map(lambda kv: (kv[0], len(kv[1].tokens), len(kv[1].true))),
                    equal_to([("2026-01-01", 10, 10), ("2026-01-01", 9, 9)]), label="sizes")
        assert_that(out[DEAD_LETTERS] | beam.combiners.Count.Globally(), equal_to([2]),
                    label="dead")


def _write_sampled(kv: Any, frame: Any, path: str) -> None:
    ids = [str(i) for i, t in zip(frame[DOC_ID], kv[1].true) if t >= 0]
    with open(path, "w") as f:
        json.dump(ids, f)


@pytest.mark.slow
def test_the_labelled_sample_is_a_fixed_share_chosen_by_id(
        make_batch: Any, registry_root: str, model_ref: Any, tmp_path: Any) -> None:
    """``tracking.labelled_sample``: which records count for accuracy depends on the id
    alone (the same in any batch or order), and a smaller share is a subset of a larger."""
    rows = list(make_docs(2000, seed=8, prefix="ls"))
    forward = make_batch(rows, batch_key="f")
    backward = make_batch(rows[::-1], batch_key="r")

    def sampled(batch: Any, share: float) -> set[str]:
        handler = DocBatchModelHandler(registry_root, model_ref, top_k=1,
                                       policy=Policy(), tracking=True, labelled_sample=share)
        path = str(tmp_path / f"{batch.batch_key}-{share}.json")
        with test_pipeline.TestPipeline(runner="FnApiRunner") as p:
            out = p | beam.Create([batch]) | ScoreBatches(handler, 500)
            _ = out[TRACK] | beam.Map(_write_sampled, batch.frame, path)
        with open(path) as f:
            return set(json.load(f))

    everything, half, tenth = (sampled(forward, s) for s in (1.0, 0.5, 0.1))
    assert len(everything) == 2000
    assert tenth < half < everything
    assert abs(len(half) - 1000) < 100 and abs(len(tenth) - 200) < 60
    assert sampled(backward, 0.1) == tenth


@pytest.fixture(scope="module")
def counting_registry(tmp_path_factory: pytest.TempPathFactory, trained_model: Any) -> Any:
    return _register(tmp_path_factory, "counting", CountingPipeline(trained_model))


def test_model_is_loaded_once_per_process_for_many_batches(
        pipeline: Any, make_batch: Any, counting_registry: Any) -> None:
    root, ref = counting_registry
    n_batches = 40
    batches = [_docs_batch(make_batch, 5, seed=i, key=f"b{i:02d}") for i in range(n_batches)]
    handler = DocBatchModelHandler(root, ref, top_k=2, policy=Policy(TRUSTED))
    CountingPipeline.loads = 0
    _ = (pipeline | beam.Create(batches) | ScoreBatches(handler, 500))["scored"] | beam.Map(len)
    result = pipeline.run()
    result.wait_until_finish()

    def metric(name: str, kind: str) -> Any:
        found = result.metrics().query(
            MetricsFilter().with_namespace("beamscore").with_name(name))[kind]
        assert len(found) == 1, (name, found)
        return found[0].committed

    assert metric("inference_batch_latency_micro_secs", "distributions").count == n_batches
    assert metric("num_inferences", "counters") == 5 * n_batches
    assert metric("load_model_latency_milli_secs", "distributions").count == 1
    assert CountingPipeline.loads == 1, "the artifact was unpickled more than once"


def test_handler_scores_with_the_registry_model(registry_root: str, model_ref: Any,
                                                make_batch: Any, trained_model: Any) -> None:
    handler = DocBatchModelHandler(registry_root, model_ref, top_k=5)
    model = handler.load_model()
    batch = _docs_batch(make_batch, 20, seed=9, key="k")
    batch = batch.with_frame(batch.frame.assign(
        **{TEXT: preprocess_texts(batch.frame[TEXT].tolist(), PreprocessConfig())}))
    [(scored, dead, stats)] = list(handler.run_inference(batch, model))
    assert dead == [] and stats is None  # untracked
    assert scored.frame[PRED_LABEL].tolist() == list(trained_model.predict(batch.frame[TEXT]))
    assert scored.frame[DOC_ID].tolist() == batch.frame[DOC_ID].tolist()


def _threads_in(module_file: str) -> list[str]:
    """Threads currently running code of ``module_file``."""
    import sys
    import threading

    names = {t.ident: t.name for t in threading.enumerate()}
    found = []
    for ident, frame in sys._current_frames().items():
        f: Any = frame
        while f is not None:
            if f.f_code.co_filename == module_file:
                found.append(names.get(ident, str(ident)))
                break
            f = f.f_back
    return found


def _children() -> dict[int, str]:
    """This process's children: pid -> command line."""
    import os

    out = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as fh:
                if int(fh.read().rsplit(")", 1)[1].split()[1]) == os.getpid():
                    with open(f"/proc/{pid}/cmdline", "rb") as cmd:
                        out[int(pid)] = cmd.read().replace(b"\0", b" ").decode()[:200]
        except (OSError, ValueError, IndexError):
            continue
    return out


@pytest.mark.slow
def test_a_hung_record_is_dead_lettered_a_slow_one_scored_and_nothing_left_running(
        pipeline: Any, make_batch: Any, trained_model: Any,
        tmp_path_factory: pytest.TempPathFactory) -> None:
    import tests.doubles

    root, ref = _register(tmp_path_factory, "hanging", HangingPipeline(trained_model))
    batch = _docs_batch(make_batch, 8, 4, "b8")
    texts = batch.frame[TEXT].tolist()
    texts[2], texts[6] = "HANG " + texts[2], "SLOW " + texts[6]
    batch = batch.with_frame(batch.frame.assign(text=texts))
    handler = DocBatchModelHandler(root, ref, top_k=2, policy=Policy(TRUSTED),
                                   time_limit=TimeLimit(per_record=0.5))
    before = _children()  # processes an earlier test of this worker keeps (fixtures)
    started = time.monotonic()
    with pipeline as p:
        out = p | beam.Create([batch]) | ScoreBatches(handler, 500)
        scored = out["scored"] | beam.FlatMap(lambda b: b.frame[DOC_ID].tolist())
        hung = batch.frame[DOC_ID][2]
        assert_that(scored, equal_to([d for d in batch.frame[DOC_ID] if d != hung]),
                    label="scored")
        dead = out[DEAD_LETTERS] | beam.Map(lambda d: (d["position"], d["stage"],
                                                      d["reason"].split(":")[0]))
        assert_that(dead, equal_to([(batch.frame[POSITION][2], "inference", "timeout")]),
                    label="dead")
    # 8 records at 0.5 s each: 4 s, then 2, 1 and 0.5 s for the halves that hold it.
    assert time.monotonic() - started < 4 + 2 + 1 + 0.5 + 5
    assert _threads_in(tests.doubles.__file__) == [], "a thread is still in the model"
    left = {pid: cmd for pid, cmd in _children().items() if pid not in before}
    assert left == {}, "a scoring process was left behind"



def test_tracking_measures_importance_within_the_batch_limit_or_skips_it(
        pipeline: Any, make_batch: Any, trained_model: Any,
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """A model without coefficients: tracking permutes 50 columns on the batch's 16 rows,
    51 predictions of 16 rows (16 s at 20 ms a row). Under a limit of 50 ms a record (0.8
    s for the batch), scoring (0.32 s) fits and the importance measure, one call killed
    at 0.8 s, is skipped: every record scored, the batch's importance marked skipped."""
    root, ref = _register(tmp_path_factory, "slowclf", slow_pipeline(trained_model, 0.02))
    batch = _docs_batch(make_batch, 16, 5, "s16")
    handler = DocBatchModelHandler(root, ref, top_k=1, policy=Policy(TRUSTED), tracking=True,
                                   time_limit=TimeLimit(per_record=0.05),
                                   importance_columns=range(50))
    before = _children()
    started = time.monotonic()
    with pipeline as p:
        out = p | beam.Create([batch]) | ScoreBatches(handler, 500)
        assert_that(out["scored"] | beam.FlatMap(lambda b: b.frame[DOC_ID].tolist()),
                    equal_to(batch.frame[DOC_ID].tolist()), label="scored")
        assert_that(out[DEAD_LETTERS], equal_to([]), label="dead")
        assert_that(out[TRACK] | beam.Map(lambda kv: (kv[1].importance_skipped,
                                                      kv[1].importance_rows)),
                    equal_to([(1, 0)]), label="importance")
    assert time.monotonic() - started < 10  # the measure alone: 16 s
    assert {pid for pid in _children() if pid not in before} == set()


def test_a_batch_of_slow_records_ends_within_its_time_budget(
        pipeline: Any, make_batch: Any, trained_model: Any,
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """32 records each slower alone (0.4 s) than any call may take (0.25 s at least),
    under 25 ms a record: the batch's limit is 0.8 s, its budget 3.2 s. Bisecting down
    to every record would take 16.6 s; the budget ends it. Every record is a dead letter,
    once, ``timeout``: those scored alone and those the budget left."""
    root, ref = _register(tmp_path_factory, "allslow", slow_pipeline(trained_model, 0.4))
    batch = _docs_batch(make_batch, 32, 6, "s32")
    handler = DocBatchModelHandler(root, ref, top_k=1, policy=Policy(TRUSTED),
                                   time_limit=TimeLimit(per_record=0.025))
    started = time.monotonic()
    with pipeline as p:
        out = p | beam.Create([batch]) | ScoreBatches(handler, 500)
        assert_that(out["scored"] | beam.FlatMap(lambda b: b.frame[DOC_ID].tolist()),
                    equal_to([]), label="scored")
        dead = out[DEAD_LETTERS] | beam.Map(lambda d: (d["position"], d["reason"].split(":")[0]))
        assert_that(dead, equal_to([(pos, "timeout") for pos in batch.frame[POSITION]]),
                    label="dead")
        budget = out[DEAD_LETTERS] | beam.Filter(lambda d: "time budget (3.2 s" in d["reason"])
        assert_that(budget | beam.combiners.Count.Globally() | beam.Map(lambda n: n > 0),
                    equal_to([True]), label="left by the budget")
    assert time.monotonic() - started < 12  # bisecting to every record: 16.6 s


def test_handler_uses_the_fast_path_only_when_enabled(registry_root: str,
                                                      model_ref: Any) -> None:
    fast = DocBatchModelHandler(registry_root, model_ref, top_k=3).load_model()
    plain = DocBatchModelHandler(registry_root, model_ref, top_k=3,
                                 fast_text_features=False).load_model()
    assert isinstance(fast, FastTextPipeline)
    assert isinstance(plain, Pipeline)
    texts = [d["text"] for d in make_docs(200, seed=21)] + ["", "café refund", "退款"]
    assert np.array_equal(fast.predict_proba(texts), plain.predict_proba(texts))



def test_a_loaded_fast_model_has_its_lookup_tables_built_before_it_is_shared(
        registry_copy: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whoever loads it (the zygote's preload, a worker loading for itself, one of
    Dataflow's harness threads under Beam's ``Shared`` lock), the model handed out has
    pandas' hash tables built, so bundles scoring on threads never build them at once."""
    monkeypatch.setattr(infer, "_PRELOADED", {})
    ref = ModelRegistry(registry_copy).resolve("demo")
    handler = DocBatchModelHandler(registry_copy, ref, top_k=3)
    model = handler.load_model()
    assert isinstance(model, FastTextPipeline)
    assert all(t._engine.is_mapping_populated for t in (model._short_keys, model._bi_keys))
    handler.preload()
    (preloaded,) = infer._PRELOADED.values()
    assert all(t._engine.is_mapping_populated
               for t in (preloaded._short_keys, preloaded._bi_keys))


def test_a_model_stays_preloaded_when_warming_the_process_fails(
        registry_copy: str, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(infer, "_PRELOADED", {})

    def fails() -> None:
        raise RuntimeError("no warm-up here")

    monkeypatch.setattr(infer, "warm_input_validation", fails)
    ref = ModelRegistry(registry_copy).resolve("demo")
    handler = DocBatchModelHandler(registry_copy, ref, top_k=3)
    with caplog.at_level(logging.WARNING, logger=infer.__name__):
        handler.preload()
    (preloaded,) = infer._PRELOADED.values()
    assert handler.load_model() is preloaded
    assert "input check not warmed for the workers: RuntimeError: no warm-up here" \
        in caplog.text


def test_a_preloaded_model_is_handed_out_for_the_same_settings_only(
        registry_copy: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the fork server's zygote loaded is what its workers score with, provided
    they would have loaded the same artifact the same way; otherwise they load."""
    monkeypatch.setattr(infer, "_PRELOADED", {})
    registry = ModelRegistry(registry_copy)
    ref = registry.resolve("demo")
    DocBatchModelHandler(registry_copy, ref, top_k=3).preload()
    (preloaded,) = infer._PRELOADED.values()
    assert isinstance(preloaded, FastTextPipeline)
    os.remove(registry.artifact_path(ref))  # from now on, only the preload can be had

    # Settings that do not change how the model is loaded: the preloaded model.
    same = DocBatchModelHandler(registry_copy, ref, top_k=1, tracking=True, payload_limit=10)
    assert same.load_model() is preloaded
    # Any that do: a load of its own (and the artifact is gone).
    others = [DocBatchModelHandler(registry_copy, ref, top_k=3, fast_text_features=False),
              DocBatchModelHandler(registry_copy, ref, top_k=3, policy=Policy(["a.B"])),
              DocBatchModelHandler(registry_copy, ref, top_k=3, allow_sklearn_mismatch=True),
              DocBatchModelHandler(registry_copy + "/", ref, top_k=3)]
    for other in others:
        with pytest.raises((RegistryError, OSError)):
            other.load_model()
