"""A worker's operation specs pickled without compression (``engine.pickles``): the same
objects back as through Beam's pickler (a property over arbitrary values), Beam's own
pickles still read, Beam's format kept for another pickle library, a pipeline's result
unchanged with no spec compressed while its operations are built, and every worker of
the fork server with it."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apache_beam as beam
import pytest
from apache_beam.coders import VarIntCoder
from apache_beam.internal import cloudpickle_pickler, pickler
from apache_beam.runners.portability.fn_api_runner import fn_runner
from apache_beam.runners.worker import bundle_processor, operations
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms import userstate
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import pickles
from engine.pickles import MARKER, plain_operation_pickles
from tests.engine.helpers import probed_workers


@pytest.fixture(autouse=True)
def beams_own(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test starts with Beam's own pickler in the worker modules and leaves it so."""
    monkeypatch.setattr(bundle_processor, "pickler", pickler)
    monkeypatch.setattr(operations, "pickler", pickler)
    yield


VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
    | st.binary(),
    lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner)
    | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=20)


@settings(max_examples=150, deadline=None)
@given(VALUES)
def test_a_plain_pickle_gives_back_what_beams_pickler_does(value: Any) -> None:
    assert plain_operation_pickles()
    plain = bundle_processor.pickler
    data = plain.dumps(value)
    assert data.startswith(MARKER)
    assert plain.loads(data) == pickler.loads(pickler.dumps(value)) == value


def _double(x: int) -> int:
    return 2 * x


def test_specs_are_not_compressed_and_each_load_is_a_new_object(
        monkeypatch: pytest.MonkeyPatch) -> None:
    plain_operation_pickles()
    monkeypatch.setattr(cloudpickle_pickler.bz2, "compress",
                        lambda *a, **k: pytest.fail("a spec was compressed"))
    spec = (beam.Map(lambda x: x + 1), (1,), {"k": [1, 2]}, [], None)
    data = bundle_processor.pickler.dumps(spec)
    first, second = operations.pickler.loads(data), operations.pickler.loads(data)
    assert first is not second and first[0] is not second[0]
    assert first[1:] == second[1:] == spec[1:]
    assert operations.pickler.loads(bundle_processor.pickler.dumps(_double))(21) == 42


def test_beams_own_pickles_are_still_read() -> None:
    """A descriptor's DoFns come pickled by the launcher, in Beam's format."""
    plain_operation_pickles()
    payload = pickler.dumps((_double, (), {}, [], None))
    assert not payload.startswith(MARKER)
    fn, *_ = operations.pickler.loads(payload)
    assert fn(4) == 8
    assert bundle_processor.pickler.roundtrip is pickler.roundtrip  # the rest is Beam's


def test_another_pickle_library_keeps_beams_format(monkeypatch: pytest.MonkeyPatch) -> None:
    class _Library:
        @staticmethod
        def dumps(o: Any, **kwargs: Any) -> bytes:
            return b"library:" + repr(o).encode()

        @staticmethod
        def loads(encoded: bytes, **kwargs: Any) -> Any:
            return ("loaded", encoded)

    plain_operation_pickles()
    monkeypatch.setattr(pickler, "desired_pickle_lib", _Library)
    data = bundle_processor.pickler.dumps((1, 2))
    assert data == b"library:(1, 2)"
    assert operations.pickler.loads(data) == ("loaded", data)


class _Stateful(beam.DoFn):
    COUNT = userstate.ReadModifyWriteStateSpec("count", VarIntCoder())

    def process(self, kv: tuple[str, int],
                count=beam.DoFn.StateParam(COUNT)) -> Any:  # noqa: B008 - Beam's way
        seen = (count.read() or 0) + 1
        count.write(seen)
        yield kv[0], seen


def _run_pipeline() -> None:
    with beam.Pipeline(runner=fn_runner.FnApiRunner()) as p:
        numbers = p | "numbers" >> beam.Create([1, 2, 3, 4])
        offset = p | "offset" >> beam.Create([10])
        shifted = numbers | beam.Map(lambda x, o: x + o, o=beam.pvalue.AsSingleton(offset))
        keyed = shifted | beam.Map(lambda x: ("odd" if x % 2 else "even", x))
        sums = keyed | beam.CombinePerKey(sum)
        counts = keyed | beam.ParDo(_Stateful()) | beam.CombinePerKey(max)
        assert_that(sums, equal_to([("odd", 24), ("even", 26)]), label="sums")
        assert_that(counts, equal_to([("odd", 2), ("even", 2)]), label="counts")


@pytest.mark.parametrize("installed", [False, True])
def test_a_pipeline_runs_the_same_and_its_operations_compress_no_spec(
        installed: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Side input, combine, state: the same result; with the plain pickler no operation
    spec goes through Beam's compressing ``dumps`` (without it, some do: the count can
    tell)."""
    if installed:
        plain_operation_pickles()
    callers: list[str] = []
    compressing = cloudpickle_pickler.dumps

    def counting(*args: Any, **kwargs: Any) -> bytes:
        frame = sys._getframe(2)  # cloudpickle_pickler <- pickler <- caller
        callers.append(frame.f_globals.get("__name__", ""))
        return compressing(*args, **kwargs)

    monkeypatch.setattr(cloudpickle_pickler, "dumps", counting)
    _run_pipeline()
    from_workers = [c for c in callers if c == bundle_processor.__name__]
    assert (from_workers == []) is installed


@pytest.mark.parametrize("method", ["fork", pytest.param("spawn", marks=pytest.mark.slow)])
def test_every_worker_of_the_fork_server_pickles_plainly(
        method: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    probe = tmp_path / "pickles.jsonl"
    monkeypatch.setenv("BEAMSCORE_PICKLES_PROBE", str(probe))
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[2]))
    # Beam's own pickler here (the fixture): the zygote installs its own.
    workers = probed_workers("tests.engine.pickles_probe", method, probe)
    assert all(w["plain"] for w in workers)


def test_the_plain_pickler_is_what_the_module_installs() -> None:
    assert plain_operation_pickles() and plain_operation_pickles()  # idempotent
    assert isinstance(bundle_processor.pickler, pickles._PlainPickler)
    assert operations.pickler is bundle_processor.pickler
