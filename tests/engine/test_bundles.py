"""Small stages go only to the workers that have elements of them (``engine.bundles``)."""

from __future__ import annotations

import apache_beam as beam
import pytest
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner import fn_runner
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.userstate import BagStateSpec

from engine import bundles
from engine.forkserver import ForkServer

WORKERS = 4


class _CountBundles(beam.DoFn):
    """Passes elements on; counts the bundles it starts under ``name``."""

    def __init__(self, name: str):
        self._name = name

    def start_bundle(self) -> None:
        Metrics.counter("test_bundles", self._name).inc()

    def process(self, element: object):  # type: ignore[no-untyped-def]
        yield element


_BAG = BagStateSpec("values", beam.coders.VarIntCoder())
_BAG_PARAM = beam.DoFn.StateParam(_BAG)


class _Collect(beam.DoFn):
    """A stateful DoFn: the values of a key, in its bag, emitted when they are all in."""

    def process(self, element: tuple[str, int], bag=_BAG_PARAM):  # type: ignore[no-untyped-def]
        bag.add(element[1])
        values = sorted(bag.read())
        if len(values) == 2:
            yield element[0], values


def _bundles(result: beam.runners.runner.PipelineResult, name: str) -> int:
    counters = result.metrics().query(MetricsFilter().with_name(name))["counters"]
    return sum(c.committed for c in counters)


@pytest.fixture(scope="module")
def server():  # type: ignore[no-untyped-def]
    server = ForkServer(preload=["apache_beam"], start_method="spawn")
    server.start()  # installs the skipping bundle manager for this process
    server.wait_ready()
    yield server
    server.stop()


def test_a_small_stage_runs_only_where_it_has_elements_and_results_are_whole(server) -> None:  # type: ignore[no-untyped-def]
    runner = fn_runner.FnApiRunner(default_environment=server.environment())
    options = PipelineOptions(direct_num_workers=WORKERS, direct_running_mode="in_memory")
    p = beam.Pipeline(runner=runner, options=options)
    one = p | "One" >> beam.Create(["only"]) | "Count one" >> beam.ParDo(_CountBundles("one"))
    keyed = (p | "Pairs" >> beam.Create([("a", 1), ("b", 2), ("a", 3)])
             | "Group" >> beam.GroupByKey()  # 2 keys for 4 workers: 2 parts are empty
             | "Count groups" >> beam.ParDo(_CountBundles("groups"))
             | beam.MapTuple(lambda k, vs: (k, sorted(vs))))
    empty = (p | "Nothing" >> beam.Create([]) | beam.Map(lambda x: x)
             | "Sum nothing" >> beam.CombineGlobally(sum))  # the default still comes
    many = (p | "Many" >> beam.Create(list(range(40))) | "Spread" >> beam.Reshuffle()
            | "Count many" >> beam.ParDo(_CountBundles("many")))
    assert_that(one, equal_to(["only"]), label="one")
    assert_that(keyed, equal_to([("a", [1, 3]), ("b", [2])]), label="keyed")
    assert_that(empty, equal_to([0]), label="empty")
    assert_that(many, equal_to(list(range(40))), label="many")
    result = p.run()
    result.wait_until_finish()
    assert _bundles(result, "one") == 1  # not one per worker
    assert _bundles(result, "groups") == 2  # one per part that holds a key
    assert _bundles(result, "many") == WORKERS  # every worker has elements: all run


def test_stateful_stages_and_a_single_worker_are_left_as_they_are(server) -> None:  # type: ignore[no-untyped-def]
    for workers in (1, WORKERS):
        runner = fn_runner.FnApiRunner(default_environment=server.environment())
        options = PipelineOptions(direct_num_workers=workers, direct_running_mode="in_memory")
        p = beam.Pipeline(runner=runner, options=options)
        collected = (p | beam.Create([("a", 1), ("b", 2), ("a", 3), ("b", 4)])
                     | beam.ParDo(_Collect()))
        one = (p | "One" >> beam.Create(["only"])
               | "Count one" >> beam.ParDo(_CountBundles("one")))
        assert_that(collected, equal_to([("a", [1, 3]), ("b", [2, 4])]), label="collected")
        assert_that(one, equal_to(["only"]), label="one")
        result = p.run()
        result.wait_until_finish()
        assert _bundles(result, "one") == 1, workers


def test_another_beams_bundle_manager_is_left_alone(monkeypatch, caplog) -> None:  # type: ignore[no-untyped-def]
    def other(self, inputs, expected_outputs, fired_timers):  # type: ignore[no-untyped-def]
        return None

    monkeypatch.setattr(bundles, "_ORIGINAL", other)
    monkeypatch.setattr(fn_runner.BundleManager, "process_bundle", other)
    assert bundles.skip_empty_bundles() is False
    assert fn_runner.BundleManager.process_bundle is other
    assert "not the expected one" in caplog.text
