"""The restricted unpickler: scientific classes load, anything else is refused unrun."""

from __future__ import annotations

import io
import os
import pathlib
import pickle
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
import scipy.sparse
from hypothesis import given, settings
from hypothesis import strategies as st

from models.unpickle import Policy, UntrustedGlobal, check_globals, load_restricted


def _dump(obj: Any, compress: int = 3) -> bytes:
    buf = io.BytesIO()
    joblib.dump(obj, buf, compress=compress)
    return buf.getvalue()


class Marker:
    """Unpickling this creates ``path``: the stand-in for hostile code."""

    def __init__(self, path: Path, via: Any = pathlib.Path.touch):
        self.path, self.via = path, via

    def __reduce__(self) -> Any:
        return (self.via, (pathlib.Path(self.path),))


class OwnModel:
    """A user's own class."""

    def __init__(self) -> None:
        self.classes_ = np.array(["a", "b"])


def test_the_default_recipe_loads_with_the_globals_it_needs(trained_model: Any) -> None:
    obj, used = load_restricted(_dump(trained_model), Policy())
    texts = ["refund my invoice", "parcel never arrived"]
    assert np.array_equal(obj.predict_proba(texts), trained_model.predict_proba(texts))
    assert "sklearn.pipeline.Pipeline" in used and "joblib.numpy_pickle.NumpyArrayWrapper" in used
    assert all(g.split(".")[0] in ("sklearn", "numpy", "joblib") for g in used), used


@pytest.mark.parametrize("compress", [0, 3])
def test_a_reduce_payload_is_refused_before_it_runs(tmp_path: Path, compress: int) -> None:
    marker = tmp_path / "ran"
    joblib.load(io.BytesIO(_dump(Marker(tmp_path / "control"), compress)))  # it really runs
    assert (tmp_path / "control").exists()
    with pytest.raises(UntrustedGlobal, match="pathlib.Path.touch"):
        load_restricted(_dump(Marker(marker), compress), Policy())
    assert not marker.exists()


@pytest.mark.parametrize("obj, name", [
    (Marker(Path("/tmp/x"), os.system), "posix.system"),
    (Marker(Path("/tmp/x"), eval), "builtins.eval"),
    (np.memmap, "numpy.memmap"),
    (np.load, "numpy.load"),
    (OwnModel(), f"{__name__}.OwnModel"),
])
def test_globals_outside_the_allow_list_are_refused_by_name(obj: Any, name: str) -> None:
    with pytest.raises(UntrustedGlobal) as exc:
        load_restricted(_dump(obj), Policy())
    assert exc.value.name == name and name in str(exc.value)


def test_a_payload_inside_an_object_array_is_refused_too(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    array = np.empty(2, dtype=object)
    array[0], array[1] = "label", Marker(marker)
    with pytest.raises(UntrustedGlobal):
        load_restricted(_dump({"classes": array}), Policy())
    assert not marker.exists()


def test_a_users_class_loads_when_trusted_by_its_exact_name() -> None:
    data = _dump(OwnModel())
    obj, used = load_restricted(data, Policy([f"{__name__}.OwnModel"]))
    assert isinstance(obj, OwnModel) and f"{__name__}.OwnModel" in used
    with pytest.raises(UntrustedGlobal):
        load_restricted(data, Policy([f"{__name__}.Other"]))
    with pytest.raises(UntrustedGlobal, match="trusted by name but"):
        load_restricted(_dump(Marker(Path("/tmp/y"), os.getcwd)), Policy(["posix.getcwd"]))


def _global(module: str, name: str, *then: bytes) -> bytes:
    """A protocol-4 pickle that asks for ``module`` + ``name`` (STACK_GLOBAL, which takes
    dotted attribute paths), then runs the opcodes ``then``."""
    def text(s: str) -> bytes:
        return pickle.SHORT_BINUNICODE + bytes([len(s)]) + s.encode()
    return pickle.PROTO + b"\x04" + text(module) + text(name) + pickle.STACK_GLOBAL \
        + b"".join(then) + pickle.STOP


def test_the_gadget_chain_through_a_scikit_learn_module_is_refused() -> None:
    """attrgetter('__init__.__globals__') reached as an attribute path of a scikit-learn
    module, then eval from the builtins: refused at the first global, nothing called."""
    path = b"__init__.__globals__"
    chain = _global("sklearn.utils._param_validation", "operator.attrgetter",
                    pickle.SHORT_BINUNICODE + bytes([len(path)]) + path,
                    pickle.TUPLE1, pickle.REDUCE)
    with pytest.raises(UntrustedGlobal, match="attribute path") as exc:
        load_restricted(chain, Policy())
    assert exc.value.name == "sklearn.utils._param_validation.operator.attrgetter"


@pytest.mark.parametrize("module, name, why", [
    ("sklearn._config", "threading.Thread", "attribute path"),
    ("sklearn.datasets._base", "Path", "not a model or data class defined there"),
    ("sklearn.pipeline", "defaultdict", "not a model or data class defined there"),
    ("sklearn.utils._testing", "TempMemmap", "test or vendored module"),
    ("numpy.testing", "TestCase", "test or vendored module"),
    ("sklearn.externals.array_api_compat", "numpy", "test or vendored module"),
])
def test_names_that_look_scientific_but_are_not_models_are_refused(
        module: str, name: str, why: str) -> None:
    with pytest.raises(UntrustedGlobal, match=why) as exc:
        load_restricted(_global(module, name), Policy())
    assert exc.value.name == f"{module}.{name}"


@pytest.mark.parametrize("module, name", [
    ("sklearn.utils.parallel", "Parallel"),  # calls what it is given, spawns processes
    ("sklearn.metrics._scorer", "_PassthroughScorer"),  # calls a named method
    ("sklearn.utils.deprecation", "deprecated"),  # wraps any callable
    ("sklearn.compose._column_transformer", "make_column_selector"),
    ("sklearn.utils._mocking", "CheckingClassifier"),
    ("sklearn.utils.estimator_checks", "_NotAnArray"),
])
def test_scikit_learn_classes_that_are_not_parts_of_a_model_are_refused(
        module: str, name: str) -> None:
    with pytest.raises(UntrustedGlobal) as exc:
        load_restricted(_global(module, name), Policy())
    assert exc.value.name == f"{module}.{name}"


def test_setting_attributes_of_a_class_is_refused() -> None:
    """BUILD on a class would change it for every later caller (a method replaced)."""
    from sklearn.linear_model import LogisticRegression

    key = b"beamscore_planted"
    state = (pickle.NONE + pickle.EMPTY_DICT + pickle.SHORT_BINUNICODE + bytes([len(key)])
             + key + pickle.BININT1 + b"\x01" + pickle.SETITEM + pickle.TUPLE2)
    planted = _global("sklearn.linear_model._logistic", "LogisticRegression", state,
                      pickle.BUILD)
    with pytest.raises(UntrustedGlobal, match="tries to set"):
        load_restricted(planted, Policy())
    assert not hasattr(LogisticRegression, "beamscore_planted")


def _fitted(kind: str) -> Any:
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.datasets import make_classification
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression, SGDClassifier
    from sklearn.neural_network import MLPClassifier

    x, y = make_classification(200, 8, random_state=0)
    model = {"forest": RandomForestClassifier(n_estimators=3, random_state=0),
             "boosting": HistGradientBoostingClassifier(max_iter=3),
             "sgd": SGDClassifier(random_state=0),
             "mlp": MLPClassifier(max_iter=5, random_state=0),
             "calibrated": CalibratedClassifierCV(LogisticRegression())}[kind]
    return model.fit(x, y), x


@pytest.mark.parametrize("kind", ["forest", "boosting", "sgd", "mlp", "calibrated"])
def test_the_parts_of_fitted_models_load(kind: str) -> None:
    """Trees, losses, optimisers and calibrators are parts of models, not estimators."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, x = _fitted(kind)
    obj, _ = load_restricted(_dump(model), Policy())
    assert np.array_equal(obj.predict(x), model.predict(x))


def test_a_test_module_is_refused_without_being_imported() -> None:
    import sys
    sys.modules.pop("sklearn.utils.tests.test_pprint", None)
    with pytest.raises(UntrustedGlobal):
        load_restricted(_global("sklearn.utils.tests.test_pprint", "LogisticRegression"),
                        Policy())
    assert "sklearn.utils.tests.test_pprint" not in sys.modules


def test_allow_pickle_lifts_the_restriction(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    load_restricted(_dump(Marker(marker)), Policy(allow_pickle=True))
    assert marker.exists()


def test_scientific_data_types_load() -> None:
    data = {"sparse": scipy.sparse.csr_matrix(np.eye(3)), "scalar": np.float32(1.5),
            "ints": np.arange(5, dtype=np.int64), "rng": np.random.RandomState(3)}
    obj, _ = load_restricted(_dump(data), Policy())
    assert (obj["sparse"] != data["sparse"]).nnz == 0 and obj["scalar"] == np.float32(1.5)
    assert obj["rng"].randint(1000) == np.random.RandomState(3).randint(1000)


def test_check_globals_judges_recorded_names_without_importing_them() -> None:
    check_globals(["sklearn.pipeline.Pipeline", "numpy.dtype",
                   "joblib.numpy_pickle.NumpyArrayWrapper"], Policy())
    with pytest.raises(UntrustedGlobal, match="mypkg.Model"):
        check_globals(["mypkg.Model"], Policy())
    check_globals(["mypkg.Model"], Policy(["mypkg.Model"]))
    for name in ("sklearn.utils._testing.TempMemmap", "sklearn.tests.test_base.T"):
        with pytest.raises(UntrustedGlobal, match="test or vendored"):
            check_globals([name], Policy())


def test_a_plain_pickle_of_a_model_loads_as_well(trained_model: Any) -> None:
    obj, _ = load_restricted(pickle.dumps(trained_model), Policy())
    assert list(obj.classes_) == list(trained_model.classes_)


def _short(text: str) -> bytes:
    return b"\x8c" + bytes([len(text)]) + text.encode()


def _build_on(module: str, cls: str, attr: str) -> bytes:
    """A pickle that pushes ``module.cls`` and BUILDs ``attr = 1`` onto the class itself
    (slot state, which pickle applies with setattr)."""
    return (b"\x80\x05" + _short(module) + _short(cls) + b"\x93"   # STACK_GLOBAL
            + b"N}" + _short(attr) + b"K\x01s\x86" + b"b.")       # (None, {attr: 1}) BUILD


def _with_nested(nested: bytes) -> bytes:
    """An uncompressed joblib artifact of an object array whose nested pickle (the
    stream joblib writes after the array's wrapper) is ``nested``."""
    array = np.array(["placeholder"], dtype=object)
    plain = _dump({"classes_": array}, compress=0)
    inner = pickle.dumps(array, protocol=5)
    assert plain.count(inner) == 1
    return plain.replace(inner, nested)


_LOSS = ("sklearn._loss.loss", "HalfBinomialLoss")


@pytest.mark.parametrize("nested", [
    # the class attribute construction, in the nested stream of an object array
    _build_on(*_LOSS, "beamscore_nested_attr"),
    # a global outside the allow-list in the nested stream
    b"\x80\x05" + _short("os") + _short("system") + b"\x93" + _short("true") + b"\x85R.",
    # an attribute path in the nested stream
    b"\x80\x05" + _short("sklearn") + _short("utils.os.system") + b"\x93.",
    # BUILD onto a module object reached through an allowed module's attribute
    b"\x80\x05" + _short("numpy") + _short("random") + b"\x93N}" + _short("seed")
    + b"K\x01s\x86b.",
], ids=["build-on-class", "foreign-global", "attribute-path", "build-on-module"])
def test_the_nested_pickle_of_an_object_array_gets_every_check(nested: bytes) -> None:
    loss = __import__(_LOSS[0], fromlist=["x"]).HalfBinomialLoss
    try:
        with pytest.raises(UntrustedGlobal):
            load_restricted(_with_nested(nested), Policy())
        assert not hasattr(loss, "beamscore_nested_attr")
    finally:
        if hasattr(loss, "beamscore_nested_attr"):
            del loss.beamscore_nested_attr


def test_the_same_nested_construction_sets_the_class_attribute_without_the_restriction() -> None:
    """The control: joblib's own loader applies the nested BUILD (so the test above
    proves the restricted unpickler stops it, not that the bytes are inert)."""
    loss = __import__(_LOSS[0], fromlist=["x"]).HalfBinomialLoss
    try:
        with pytest.raises(Exception):  # noqa: B017 - the stream is no array; it fails after
            joblib.load(io.BytesIO(_with_nested(_build_on(*_LOSS, "beamscore_control_attr"))))
        assert loss.beamscore_control_attr == 1
    finally:
        if hasattr(loss, "beamscore_control_attr"):
            del loss.beamscore_control_attr


def test_an_object_array_still_loads_through_the_nested_reader() -> None:
    arrays = {"labels": np.array(["billing", "shipping", None], dtype=object),
              "nested": np.array([None, np.array(["x"], dtype=object)], dtype=object)}
    for compress in (0, 3):
        obj, used = load_restricted(_dump(arrays, compress), Policy())
        assert list(obj["labels"]) == ["billing", "shipping", None]
        assert list(obj["nested"][1]) == ["x"]
        assert "joblib.numpy_pickle.NumpyArrayWrapper" in used


@pytest.mark.parametrize("module, name, attr", [
    ("numpy.random._pickle", "__randomstate_ctor", "__defaults__"),   # a Python function
    ("sklearn.metrics._dist_metrics", "newObj", "beamscore_planted"),  # a Cython function
    ("numpy.core.multiarray", "_reconstruct", "beamscore_planted"),   # a builtin
])
def test_setting_the_state_of_a_function_the_artifact_names_is_refused(
        module: str, name: str, attr: str) -> None:
    """BUILD on a trusted function would change it for every later caller (its defaults
    replaced, an attribute planted): refused like BUILD on a class."""
    target = _lookup_global(module, name)
    before = getattr(target, attr, None)
    with pytest.raises(UntrustedGlobal, match="tries to set"):
        load_restricted(_build_on(module, name, attr), Policy())
    assert getattr(target, attr, None) == before


def _lookup_global(module: str, name: str) -> Any:
    return getattr(__import__(module, fromlist=["x"]), name)


def _wrapper_with_slot_dtype(nested: bytes) -> bytes:
    """A joblib NumpyArrayWrapper whose object dtype arrives in BUILD's slot state (the
    second half of a (dict, slots) state), then ``nested``: its nested pickle."""
    def g(module: str, name: str) -> bytes:
        return _short(module) + _short(name) + b"\x93"

    state = (b"}" + _short("subclass") + g("numpy", "ndarray") + b"s"
             + _short("shape") + b"K\x01\x85s" + _short("order") + _short("C") + b"s"
             + _short("allow_mmap") + b"\x89s"
             + b"}" + _short("dtype") + g("numpy", "dtype") + _short("O8") + b"\x89\x88\x87R"
             + b"s\x86")  # ({...}, {"dtype": dtype("O8")})
    return (b"\x80\x05" + g("joblib.numpy_pickle", "NumpyArrayWrapper") + b")\x81" + state
            + b"b" + nested)


def test_an_object_array_announced_in_slot_state_gets_every_check() -> None:
    """Whichever way a wrapper's state spells its dtype, an object array's nested pickle
    is read by the restricted class: BUILD on a class there is refused."""
    loss = __import__(_LOSS[0], fromlist=["x"]).HalfBinomialLoss
    planted = _build_on(*_LOSS, "beamscore_slot_attr")
    try:
        with pytest.raises(UntrustedGlobal, match="tries to set"):
            load_restricted(_wrapper_with_slot_dtype(planted[:-1] + b"0"
                                                     + b"\x80\x05" + _short("numpy")
                                                     + _short("ndarray") + b"\x93K\x00\x85R."),
                            Policy())
        assert not hasattr(loss, "beamscore_slot_attr")
    finally:
        if hasattr(loss, "beamscore_slot_attr"):
            del loss.beamscore_slot_attr


def test_setting_the_state_of_a_shared_instance_a_call_returns_is_refused() -> None:
    """``MaskedConstant()`` returns numpy's one ``numpy.ma.masked``: BUILD on it would
    change it for every later user of masked arrays."""
    class Planted:
        def __reduce__(self) -> Any:
            return (np.ma.core.MaskedConstant, (),
                    (1, (), np.dtype("f8"), False, np.float64(42).tobytes(),
                     np.array(False).tobytes(), 0.0))

    before = (np.ma.masked.data.tobytes(), bool(np.ma.masked.mask))
    with pytest.raises(UntrustedGlobal, match="MaskedConstant, whose attributes"):
        load_restricted(_dump({"model": Planted()}), Policy())
    assert (np.ma.masked.data.tobytes(), bool(np.ma.masked.mask)) == before


# ------------------------------------------------------------------ values of the graph


def _stacked_through_fit(cache: Path) -> Any:
    """Allowed classes only, steered into running other code: a stacking classifier
    that calls ``fit`` (named by ``stack_method_``) on a pipeline whose ``memory``
    reads joblib's cache (unrestricted) from ``cache``."""
    from sklearn.ensemble import StackingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    inner = Pipeline([("ft", FunctionTransformer()), ("last", "passthrough")],
                     memory=str(cache))
    final = LogisticRegression().fit(np.array([[0.0], [1.0]]), ["a", "b"])
    stack = StackingClassifier([("p", inner)], final_estimator=final)
    stack.estimators_, stack.stack_method_ = [inner], ["fit"]
    stack.final_estimator_, stack.classes_ = final, final.classes_
    return Pipeline([("stack", stack)])


def test_allowed_classes_steered_into_other_code_are_refused_naming_the_value(
        tmp_path: Path) -> None:
    """The classes are all allowed; the values that choose what runs are not: the
    first one found is named by its path, and nothing of the model is called."""
    model = _stacked_through_fit(tmp_path / "cache")
    with pytest.raises(UntrustedGlobal, match=r"model\.steps\[0\]\[1\]\.(stack_method_ is "
                                              r"\['fit'\]|estimators_\[0\]\.memory is )"):
        load_restricted(_dump(model), Policy())
    model.steps[0][1].stack_method_ = ["predict_proba"]  # memory alone is refused too
    with pytest.raises(UntrustedGlobal, match=r"\.memory is .*unrestricted unpickler"):
        load_restricted(_dump(model), Policy())
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("make, attribute", [
    (lambda: __import__("sklearn.feature_extraction.text", fromlist=["x"])
     .TfidfVectorizer(input="filename"), "input"),
    (lambda: __import__("sklearn.feature_extraction.text", fromlist=["x"])
     .CountVectorizer(analyzer=np.bool_), "analyzer"),
    (lambda: __import__("sklearn.preprocessing", fromlist=["x"])
     .FunctionTransformer(np.bool_), "func"),
    (lambda: __import__("sklearn.feature_selection", fromlist=["x"])
     .SelectFromModel(None, importance_getter="estimator_.fit"), "importance_getter"),
])
def test_values_that_choose_code_are_refused(make: Any, attribute: str) -> None:
    with pytest.raises(UntrustedGlobal, match=rf"model\.{attribute} is "):
        load_restricted(_dump(make()), Policy())


def test_a_function_anywhere_in_the_model_is_refused() -> None:
    """Even one the unpickler trusts as a reconstructor: stored, it would be called."""
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression().fit(np.array([[0.0], [1.0]]), [0, 1])
    model.helpers_ = {"make": copyreg_reconstructor()}
    with pytest.raises(UntrustedGlobal, match=r"model\.helpers_\['make'\] is .*a function"):
        load_restricted(_dump(model), Policy())


def copyreg_reconstructor() -> Any:
    import copyreg

    return copyreg._reconstructor  # type: ignore[attr-defined]


def test_process_pools_are_never_started_from_a_loaded_model() -> None:
    """``n_jobs`` anywhere in the graph is set to None: one process, same predictions."""
    from sklearn.ensemble import BaggingClassifier, RandomForestClassifier
    from sklearn.pipeline import Pipeline

    x, y = np.random.default_rng(0).normal(size=(60, 4)), np.arange(60) % 2
    model = Pipeline([("bag", BaggingClassifier(RandomForestClassifier(3, n_jobs=-1),
                                                n_estimators=2, n_jobs=2, random_state=0))])
    model.fit(x, y)
    loaded, _ = load_restricted(_dump(model), Policy())
    bag = loaded.named_steps["bag"]
    assert bag.n_jobs is None and {e.n_jobs for e in bag.estimators_} == {None}
    assert np.array_equal(loaded.predict_proba(x), model.predict_proba(x))


def test_beamscores_own_recipe_passes_the_value_check(trained_model: Any) -> None:
    """The reference recipe's model passes as it is (its vocabulary walked in passing)."""
    from models.unpickle import check_values

    check_values(trained_model)  # refuses nothing of beamscore's own recipe


class Tokeniser:
    """A tokeniser of the user's own: code the artifact may name only if trusted."""

    def __call__(self, text: str) -> list[str]:
        return text.split()


def test_a_value_of_a_class_trusted_by_name_is_the_users_own_code() -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer

    model = TfidfVectorizer(tokenizer=Tokeniser(), token_pattern=None).fit(["a b", "b c"])
    with pytest.raises(UntrustedGlobal):  # the class itself is refused untrusted
        load_restricted(_dump(model), Policy())
    loaded, _ = load_restricted(_dump(model), Policy([f"{__name__}.Tokeniser"]))
    assert loaded.transform(["a c"]).nnz == 2


_VALUES = {
    "memory": ([None], ["/tmp/cache"]),
    "stack_method_": ([["predict_proba", "predict"], ["decision_function"]],
                      [["fit"], ["predict", "transform"]]),
    "input": (["content"], ["filename", "file"]),
    "analyzer": (["word", "char", "char_wb"], ["words"]),
    "importance_getter": (["auto", "coef_", "regressor_.feature_importances_"],
                          ["estimator_.fit", "coef"]),
    "tokenizer": ([None], [np.bool_]),
}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(sorted(_VALUES)), st.booleans(),
                          st.integers(0, 9)), min_size=1, max_size=4),
       st.integers(0, 2))
def test_a_model_is_refused_exactly_when_one_of_its_objects_holds_a_value_outside_the_rules(
        picks: list[tuple[str, bool, int]], depth: int) -> None:
    """Random values, allowed or not, set on scikit-learn objects nested at any depth:
    the load refuses the model exactly when one of them is outside ``VALUE_RULES``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    leaf = LogisticRegression().fit(np.array([[0.0], [1.0]]), [0, 1])
    model: Any = leaf
    for _ in range(depth):
        model = Pipeline([("step", model)])
    final: dict[str, tuple[bool, Any]] = {}  # a later pick of an attribute wins
    for name, allowed, i in picks:
        values = _VALUES[name][0 if allowed else 1]
        final[name] = (allowed, values[i % len(values)])
    for name, (_, value) in final.items():
        setattr(leaf, name, value)
    bad = not all(allowed for allowed, _ in final.values())
    if bad:
        with pytest.raises(UntrustedGlobal):
            load_restricted(_dump(model), Policy())
    else:
        load_restricted(_dump(model), Policy())
