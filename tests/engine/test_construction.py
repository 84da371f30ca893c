"""Memoized pipeline construction (``engine.construction``) answers as Beam does:
options read through cached views against Beam's own ``view_as`` after any sequence of
writes, state and timer specs against Beam's ``get_dofn_specs``, the arguments of any
function against Beam's own inspection (a function changed since inspected again), a
stateful pipeline run with the caches installed, and every worker of the fork server
with them."""

from __future__ import annotations

import functools
import gc
import logging
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apache_beam as beam
import pytest
from apache_beam.coders import VarIntCoder
from apache_beam.options.pipeline_options import (
    DebugOptions,
    PipelineOptions,
    SetupOptions,
    StandardOptions,
    TypeOptions,
    WorkerOptions,
)
from apache_beam.runners.common import DoFnSignature
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms import core, userstate
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import construction
from engine.construction import memoize_construction
from tests.engine.helpers import probed_workers


@pytest.fixture(autouse=True)
def beams_own(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test starts with Beam's own functions and leaves them so."""
    monkeypatch.setattr(PipelineOptions, "view_as", construction._VIEW_AS)
    monkeypatch.setattr(userstate, "get_dofn_specs", construction._GET_DOFN_SPECS)
    monkeypatch.setattr(core, "get_function_args_defaults", construction._ARGS_DEFAULTS)
    yield


# (view class, option, values to set)
OPTIONS = [
    (StandardOptions, "runner", st.sampled_from(["DirectRunner", "FnApiRunner", None])),
    (StandardOptions, "streaming", st.booleans()),
    (DebugOptions, "experiments", st.lists(st.sampled_from(["a", "b", "c"]), max_size=3)),
    (SetupOptions, "pickle_library", st.sampled_from(["default", "cloudpickle"])),
    (TypeOptions, "pipeline_type_check", st.booleans()),
    (WorkerOptions, "num_workers", st.integers(0, 64)),
]
VIEWS = [PipelineOptions, StandardOptions, DebugOptions, SetupOptions, TypeOptions,
         WorkerOptions]
steps = st.lists(st.one_of(
    st.tuples(st.just("set"), st.integers(0, len(OPTIONS) - 1), st.data()),
    st.tuples(st.just("append"), st.sampled_from(["x", "y"]), st.none()),
    st.tuples(st.just("read"), st.integers(0, len(OPTIONS) - 1), st.none()),
), max_size=12)


@given(flags=st.lists(st.sampled_from(["--experiments=e1", "--num_workers=3",
                                       "--runner=DirectRunner", "--streaming"]),
                      unique=True),
       ops=steps)
def test_cached_views_read_and_write_as_beams_views(flags: list[str],
                                                    ops: list[Any]) -> None:
    """The same operations on two options objects, one viewed through Beam's
    ``view_as`` and one through the memoized one, read the same values throughout."""
    beams, cached = PipelineOptions(flags), PipelineOptions(flags)
    for op, arg, data in ops:
        if op == "set":
            cls, name, values = OPTIONS[arg]
            value = data.draw(values)
            setattr(construction._VIEW_AS(beams, cls), name, value)
            setattr(construction._view_as(cached, cls), name, value)
        elif op == "append":  # a list option changed in place through a view
            for opts, view_as in ((beams, construction._VIEW_AS),
                                  (cached, construction._view_as)):
                view = view_as(opts, DebugOptions)
                view.experiments = (view.experiments or []) + [arg]
        cls, name, _ = OPTIONS[arg if op != "append" else 2]
        assert getattr(construction._view_as(cached, cls), name) == \
            getattr(construction._VIEW_AS(beams, cls), name)
    for cls in VIEWS:
        assert construction._view_as(cached, cls).get_all_options() == \
            construction._VIEW_AS(beams, cls).get_all_options()


def test_a_view_is_made_once_per_options_and_class_and_freed_with_them() -> None:
    opts = PipelineOptions(["--num_workers=3"])
    view = construction._view_as(opts, WorkerOptions)
    assert construction._view_as(opts, WorkerOptions) is view
    assert construction._view_as(PipelineOptions([]), WorkerOptions) is not view
    cached = len(construction._views)
    del opts, view
    gc.collect()
    assert len(construction._views) < cached


def test_a_view_whose_options_changed_under_it_is_made_again() -> None:
    """A deleted option or a replaced options dict: Beam's fresh view fills the option
    in again, and so does the cached one."""
    for change in ("delete", "replace"):
        beams, cached = PipelineOptions(["--runner=X"]), PipelineOptions(["--runner=X"])
        construction._VIEW_AS(beams, StandardOptions)
        construction._view_as(cached, StandardOptions)
        for opts in (beams, cached):
            if change == "delete":
                del opts._all_options["runner"]
            else:
                opts._all_options = {"runner": "Y"}
        assert construction._view_as(cached, StandardOptions).runner == \
            construction._VIEW_AS(beams, StandardOptions).runner


_COUNT = userstate.BagStateSpec("count", VarIntCoder())
_FLUSH = userstate.TimerSpec("flush", userstate.TimeDomain.WATERMARK)
_COUNT_PARAM = beam.DoFn.StateParam(_COUNT)
_FLUSH_PARAM = beam.DoFn.TimerParam(_FLUSH)


class _Stateful(beam.DoFn):
    def process(self, element: Any, count: Any = _COUNT_PARAM,
                flush: Any = _FLUSH_PARAM) -> Any:
        count.add(1)
        flush.set(0)

    @userstate.on_timer(_FLUSH)
    def _flush(self, key: Any = beam.DoFn.KeyParam, count: Any = _COUNT_PARAM) -> Any:
        yield key, sum(count.read())


class _Duplicated(beam.DoFn):
    def process(self, element: Any, a: Any = _COUNT_PARAM, b: Any = _COUNT_PARAM) -> Any:
        yield element


def test_dofn_specs_are_beams_and_new_sets_every_time() -> None:
    fn = _Stateful()
    expected = construction._GET_DOFN_SPECS(fn)
    first = construction._get_dofn_specs(fn)
    assert first == expected and first[0] and first[1]
    first[0].clear()
    first[1].clear()
    assert construction._get_dofn_specs(fn) == expected
    assert construction._get_dofn_specs(beam.DoFn()) == (set(), set())
    for _ in range(2):  # an invalid DoFn is refused every time, never cached
        with pytest.raises(ValueError, match="duplicate"):
            construction._get_dofn_specs(_Duplicated())


def test_specs_are_per_dofn_object_not_per_class() -> None:
    """Two objects of one class whose process methods declare different state."""
    other = userstate.BagStateSpec("other", VarIntCoder())

    def with_state(spec: Any) -> beam.DoFn:
        fn = beam.DoFn()
        param = beam.DoFn.StateParam(spec)

        def process(self: Any, element: Any, state: Any = param) -> Any:
            yield element

        fn.process = types.MethodType(process, fn)  # type: ignore[method-assign]
        return fn

    first, second = with_state(_COUNT), with_state(other)
    assert construction._get_dofn_specs(first) == ({_COUNT}, set())
    assert construction._get_dofn_specs(second) == ({other}, set())


def test_a_stateful_pipeline_runs_with_construction_memoized() -> None:
    assert memoize_construction()
    assert PipelineOptions.view_as is construction._view_as
    assert userstate.get_dofn_specs is construction._get_dofn_specs
    assert core.get_function_args_defaults is construction._args_defaults
    with test_pipeline.TestPipeline(runner="FnApiRunner") as p:
        counts = (p | beam.Create([("a", 1), ("b", 2), ("a", 3)])
                  | beam.ParDo(_Stateful()))
        assert_that(counts, equal_to([("a", 2), ("b", 1)]))


def test_another_beam_signature_installs_nothing(monkeypatch: pytest.MonkeyPatch,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    for setting, value in (("_SIGNATURES", {**construction._SIGNATURES,
                                             "get_dofn_specs": ["dofn", "extra"]}),
                           ("_BEAM", "2.78.")):
        with monkeypatch.context() as changed:
            changed.setattr(construction, setting, value)
            caplog.clear()
            with caplog.at_level(logging.WARNING, logger="engine.construction"):
                assert not memoize_construction()
        assert PipelineOptions.view_as is construction._VIEW_AS
        assert userstate.get_dofn_specs is construction._GET_DOFN_SPECS
        assert core.get_function_args_defaults is construction._ARGS_DEFAULTS
        assert "not memoized" in caplog.text


_PARAMS = (None, 0, "x", core.DoFn.TimestampParam, core.DoFn.WindowParam, _COUNT_PARAM)


def _function(n_args: int, defaults: tuple[Any, ...], star: bool, kwonly: bool) -> Any:
    """A function of ``n_args`` positional parameters, the last ones with ``defaults``,
    optionally ``*args`` and a keyword-only parameter, made as from source code."""
    names = [f"a{i}" for i in range(n_args)]
    first_default = n_args - len(defaults)
    spec = ", ".join(names[:first_default]
                     + [f"{n}=_d[{i}]" for i, n in enumerate(names[first_default:])]
                     + (["*args", "k=1"] if star and kwonly else ["*args"] if star
                        else ["*", "k=1"] if kwonly else []))
    scope: dict[str, Any] = {"_d": defaults}
    exec(f"def f({spec}):\n    return None", scope)  # noqa: S102 - built by the test
    return scope["f"]


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 6).flatmap(lambda n: st.tuples(
    st.just(n), st.lists(st.sampled_from(_PARAMS), max_size=n - 1).map(tuple),
    st.booleans(), st.booleans())))
def test_arguments_of_functions_and_bound_methods_are_beams(case: tuple) -> None:
    n, defaults, star, kwonly = case
    fn = _function(n, defaults, star, kwonly)

    class Holder:
        method = fn

    for f in (fn, Holder().method, Holder().method):  # the second bound one is kept
        expected = construction._ARGS_DEFAULTS(f)
        assert construction._args_defaults(f) == expected
        assert construction._args_defaults(f) == expected


def test_arguments_of_other_callables_are_beams() -> None:
    class Callable:
        def __call__(self, x: int, y: int = 2) -> int:
            return x + y

    for f in (functools.partial(lambda a, b=1: a, 3), Callable(), str.upper, len, dict,
              functools.wraps(len)(lambda *a: 0)):
        assert construction._args_defaults(f) == construction._ARGS_DEFAULTS(f)


def test_a_function_is_inspected_once_and_again_after_it_changed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    beams, calls = construction._ARGS_DEFAULTS, []
    monkeypatch.setattr(construction, "_ARGS_DEFAULTS", lambda f: calls.append(f) or beams(f))

    def f(a: int, b: int = 1) -> None: ...

    assert construction._args_defaults(f) == (["a", "b"], [1])
    assert construction._args_defaults(f) == (["a", "b"], [1])
    assert len(calls) == 1
    f.__defaults__ = (5,)
    assert construction._args_defaults(f) == (["a", "b"], [5])
    f.__wrapped__ = len  # type: ignore[attr-defined]  # inspect follows __wrapped__
    assert construction._args_defaults(f) == beams(f)
    assert len(calls) == 3
    args, defaults = construction._args_defaults(f)  # a caller's lists are its own
    args.append("changed")
    defaults.append("changed")
    assert construction._args_defaults(f) == beams(f)


def test_a_function_whose_signature_comes_from_elsewhere_is_inspected_every_time() -> None:
    """Decorated (``__wrapped__``) or given a ``__signature__``: inspect follows those,
    and what they lead to may change without the function changing."""
    def g(a: int, b: int = 1) -> None: ...

    @functools.wraps(g)
    def wrapper(*args: Any, **kwargs: Any) -> None: ...

    assert construction._args_defaults(wrapper) == (["a", "b"], [1])
    g.__defaults__ = (7,)
    assert construction._args_defaults(wrapper) == (["a", "b"], [7])

    def h(c: int) -> None: ...

    def other(a: int, b: int) -> None: ...

    other.__wrapped__ = h  # type: ignore[attr-defined]
    other.__signature__ = None  # type: ignore[attr-defined]  # unwrapping stops here
    assert construction._args_defaults(other) == construction._ARGS_DEFAULTS(other)
    del other.__signature__  # type: ignore[attr-defined]
    assert construction._args_defaults(other) == (["c"], [])


def test_a_workers_dofn_objects_inspect_each_method_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker unpickles a new DoFn object per stage: the second costs no inspection."""
    assert memoize_construction()
    beams, calls = construction._ARGS_DEFAULTS, []
    monkeypatch.setattr(construction, "_ARGS_DEFAULTS", lambda f: calls.append(f) or beams(f))

    class Counting(_Stateful):  # methods of its own, not inspected by an earlier test
        def process(self, element: Any, count: Any = _COUNT_PARAM,
                    flush: Any = _FLUSH_PARAM) -> Any:
            count.add(1)
            flush.set(0)

    first = DoFnSignature(Counting())
    once = len(calls)
    second = DoFnSignature(Counting())
    assert once > 0 and len(calls) == once
    assert first.is_stateful_dofn() and second.is_stateful_dofn()
    assert not DoFnSignature(beam.Map(str).fn).is_stateful_dofn()


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_every_worker_of_the_fork_server_has_the_caches(
        method: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    probe = tmp_path / "construction.jsonl"
    monkeypatch.setenv("BEAMSCORE_CONSTRUCTION_PROBE", str(probe))
    # Beam's own functions here (the fixture): the zygote installs the caches.
    workers = probed_workers("tests.engine.construction_probe", method, probe)
    assert all(w["memoized"] for w in workers)
