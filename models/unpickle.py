"""Loading a model artifact without running code from it: a restricted unpickler.

A joblib artifact is a pickle, and a pickle is a program: every global it names is
imported and may be called. ``load_restricted`` follows Python's documented
"restricting globals" pattern on joblib's own unpickler; the nested pickle of an
object array is read by an instance of the same restricted class, so every check below
applies to it as to the outer stream: a global is resolved only if it is

- a scikit-learn estimator or transformer class, or a class that is part of a fitted
  one (trees, losses, kernels, neighbour indexes, optimisers, ``Bunch``), or Cython's
  restorer of such a class,
- a numpy array, dtype or scalar type, a scipy sparse matrix or array class,
- one of the few named reconstructor functions numpy, joblib and copyreg pickles use,
- or a class the caller trusts by its exact name (``inference.trusted_types``).

Anything else is refused with ``UntrustedGlobal`` naming it, before it is called:
scikit-learn's other classes too (scorers, ``Parallel``, deprecation wrappers), which
call what they are given. A name is what the pickle asks for, so it is checked twice:
by its text before anything is imported (a module outside scikit-learn, numpy and
scipy, one of their test, mock or vendored modules, or a dotted attribute path such as
``module`` + ``os.system`` is refused unimported), then by what it resolves to, which
must be defined where it was asked for (a foreign class that a scikit-learn module
merely imports is refused). Setting the state (BUILD) of anything but an object the
artifact made is refused too: of a global it named (a class, a function, a module), of
any class, function or descriptor, or of an object a scientific module holds (a call
that returns a shared instance, e.g. ``numpy.ma.masked``), it would change what every
later caller runs or reads. An array's wrapper is judged by the state it ends up with
(an object array is read by the restricted class whichever way its dtype arrives). The
reference TF-IDF + logistic regression pipeline needs nine globals, an SGD pipeline
ten (``NumpyArrayWrapper``, ``ndarray``, ``dtype``, a float type, numpy's ``scalar``,
``Pipeline``, ``TfidfVectorizer``, ``TfidfTransformer``, the classifier, its loss).

Allowed classes are not enough: a scikit-learn estimator runs what its attributes tell
it to (a ``Pipeline``'s ``memory`` reads joblib's cache with an unrestricted unpickler;
``StackingClassifier`` calls the method its ``stack_method_`` names; a vectoriser with
``input="filename"`` opens each text as a path). So once unpickled, the model's object
graph is checked too (``check_values``): every scikit-learn object in it, at any depth,
may hold only the values ``VALUE_RULES`` allows in the attributes it names, and no
function or method anywhere; the first value refused raises ``UntrustedValue`` naming
its path (``steps[1][1].estimators_[0].memory``). Process pools are never started from
a scoring worker: every ``n_jobs`` in the graph is set to None (one process; the
predictions are the same). ``allow_pickle`` lifts the restriction entirely.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import pickle
import sys
import types
from collections.abc import Iterable
from typing import Any

_SCIENTIFIC = ("sklearn", "numpy", "scipy")
TRUSTED_FUNCTIONS = frozenset({
    "numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct",
    "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar",
    "numpy.random._pickle.__randomstate_ctor", "numpy.random._pickle.__generator_ctor",
    "numpy.random._pickle.__bit_generator_ctor", "copyreg._reconstructor",
    # Cython's object constructors of scikit-learn's distance metrics and neighbour trees
    "sklearn.metrics._dist_metrics.newObj", "sklearn.neighbors._kd_tree.newObj",
    "sklearn.neighbors._ball_tree.newObj",
})
# What BUILD may never set the state of: code, and the places code is looked up in.
_CODE_TYPES = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType,
               types.MethodType, types.MethodDescriptorType, types.WrapperDescriptorType,
               types.MethodWrapperType, types.ClassMethodDescriptorType,
               types.GetSetDescriptorType, types.MemberDescriptorType, types.CodeType,
               staticmethod, classmethod, property)
_CYTHON_UNPICKLE = "__pyx_unpickle_"  # Cython's state restorer of the class it names
TRUSTED_CLASSES = frozenset({
    "joblib.numpy_pickle.NumpyArrayWrapper", "builtins.object", "builtins.slice",
    "builtins.set", "builtins.frozenset", "builtins.complex", "builtins.bytearray",
    "collections.OrderedDict", "collections.defaultdict",
})


class UntrustedGlobal(pickle.UnpicklingError):
    """The artifact names a global outside the allow-list; nothing of it was run."""

    def __init__(self, name: str, why: str):
        super().__init__(f"refusing to load a model artifact that needs {name}, {why}; a "
                         "class of your own can be trusted by name (models register --trust "
                         "MODULE.CLASS, inference.trusted_types), or the restriction lifted "
                         "(--allow-pickle, inference.allow_pickle)")
        self.name = name


# Parts of scikit-learn, numpy and scipy that are not models or data: test helpers
# (which create files and processes), mock estimators and vendored third-party code.
_NOT_MODEL_CODE = frozenset({"tests", "testing", "_testing", "conftest", "_build_utils",
                             "externals", "_vendored", "f2py", "distutils", "_mocking",
                             "estimator_checks"})
# scikit-learn classes that are not estimators but are parts of fitted ones (trees, loss
# functions, kernels, neighbour indexes, optimisers, Bunch): defined in these modules.
# Any other non-estimator class (scorers, Parallel, deprecation wrappers ...) can call
# what it is given and is refused.
_SKLEARN_PARTS = ("sklearn._loss.", "sklearn.tree._tree", "sklearn.linear_model._sgd_fast",
                  "sklearn.ensemble._hist_gradient_boosting.", "sklearn.gaussian_process.kernels",
                  "sklearn.metrics._dist_metrics", "sklearn.neighbors._ball_tree",
                  "sklearn.neighbors._kd_tree", "sklearn.neural_network._stochastic_optimizers",
                  "sklearn.utils._bunch", "sklearn.calibration")


def _lookup(module: str, name: str) -> Any:
    obj: Any = importlib.import_module(module)
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


def _refusal_by_name(module: str, name: str) -> str | None:
    """Why ``module.name`` is refused by its text alone, or None (nothing is imported)."""
    parts = module.split(".")
    if parts[0] not in _SCIENTIFIC:
        return "which is not scikit-learn, numpy or scipy"
    if "." in name:
        return "an attribute path, which only a class trusted by that exact name may be"
    if any(part in _NOT_MODEL_CODE or part.lstrip("_").startswith("test")
           for part in parts[1:]):
        return "which is in a test or vendored module, not a model or data class"
    return None


def _defined_as(obj: Any, module: str, name: str) -> bool:
    """``obj`` is the class ``module.name`` itself, not one imported there from elsewhere."""
    return (getattr(obj, "__module__", None) == module
            and getattr(obj, "__qualname__", None) == name)


def _scientific_class(module: str, obj: Any) -> bool:
    """A class of scikit-learn, or a numpy/scipy data type that does no I/O."""
    if not isinstance(obj, type):
        return False
    real_module = getattr(obj, "__module__", "") or ""
    root = module.split(".")[0]
    if real_module.split(".")[0] != root:  # e.g. sklearn.datasets._base.Path is pathlib's
        return False
    if root == "sklearn":
        from sklearn.base import BaseEstimator

        return issubclass(obj, BaseEstimator) or real_module.startswith(_SKLEARN_PARTS)
    import numpy as np

    if root == "numpy":
        if issubclass(obj, np.memmap):  # opens and may create files
            return False
        return (issubclass(obj, (np.ndarray, np.dtype, np.generic))
                or module.startswith("numpy.random"))
    import scipy.sparse

    return issubclass(obj, (scipy.sparse.spmatrix, scipy.sparse.sparray))


class Policy:
    """Which globals an artifact may use."""

    def __init__(self, trusted_types: Iterable[str] = (), allow_pickle: bool = False):
        self.trusted_types = frozenset(trusted_types)
        self.allow_pickle = allow_pickle

    def resolve(self, module: str, name: str) -> Any:
        qualified = f"{module}.{name}"
        if self.allow_pickle or qualified in TRUSTED_FUNCTIONS or qualified in TRUSTED_CLASSES:
            return _lookup(module, name)
        if qualified in self.trusted_types:
            obj = _lookup(module, name)
            if not isinstance(obj, type) or not _defined_as(obj, module, name):
                raise UntrustedGlobal(qualified, "which is trusted by name but is not the "
                                                 "class of that name")
            return obj
        why = _refusal_by_name(module, name)
        if why:
            raise UntrustedGlobal(qualified, why)
        if name.startswith(_CYTHON_UNPICKLE):  # allowed when the class it restores is
            cls = _lookup(module, name[len(_CYTHON_UNPICKLE):])
            if _scientific_class(module, cls):
                return _lookup(module, name)
            raise UntrustedGlobal(qualified, "which restores a class that is not a model "
                                             "or data class")
        obj = _lookup(module, name)
        if not _scientific_class(module, obj):
            raise UntrustedGlobal(qualified, "which is not a model or data class defined "
                                             "there")
        return obj


def _restricted_unpickler(fileobj: Any, policy: Policy, globals_used: set[str]) -> Any:
    """joblib's unpickler with ``find_class`` going through ``policy`` and BUILD checked
    (joblib is imported here, not at module load: the launcher never unpickles). Object
    arrays, which joblib stores as a nested pickle, are read by another instance of this
    class on the same file, recording into the same ``globals_used``."""
    from joblib.numpy_pickle import NumpyArrayWrapper, NumpyUnpickler

    resolved: set[int] = set()  # ids of the globals the artifact named (kept alive by
    # their modules, so an id is never reused by an object the artifact makes)
    shared_ids: list[set[int]] = []

    def shared() -> set[int]:
        """Ids of the objects the scientific modules hold at module level (a call of an
        allowed class may return one: ``MaskedConstant()`` is ``numpy.ma.masked``), read
        at the first BUILD of the load (17,000 objects, 7 ms)."""
        if not shared_ids:
            found: set[int] = set()
            for name, module in list(sys.modules.items()):
                if module is not None and name.split(".")[0] in _SCIENTIFIC:
                    with contextlib.suppress(TypeError):
                        found.update(id(v) for v in vars(module).values())
            shared_ids.append(found)
        return shared_ids[0]

    class RestrictedUnpickler(NumpyUnpickler):  # type: ignore[misc]
        dispatch = NumpyUnpickler.dispatch.copy()

        def find_class(self, module: str, name: str) -> Any:
            obj = policy.resolve(module, name)
            globals_used.add(f"{module}.{name}")
            resolved.add(id(obj))
            return obj

        def load_build(self) -> None:
            """BUILD sets an object's state. Only on an object the artifact made: on a
            global it named (a class, a function, a module) or any other class, function
            or descriptor it would change code that every later caller runs (a method or
            default replaced), so it is refused. A NumpyArrayWrapper's state is applied
            first, whichever way the artifact spells it (a dict, slots or both), and the
            array read by what the wrapper then says it holds."""
            target = self.stack[-2]
            if not policy.allow_pickle and (id(target) in resolved
                                            or isinstance(target, _CODE_TYPES)
                                            or id(target) in shared()):
                raise UntrustedGlobal(f"{getattr(target, '__module__', '?')}."
                                      f"{getattr(target, '__qualname__', type(target).__name__)}",
                                      "whose attributes the artifact tries to set")
            if policy.allow_pickle or not isinstance(target, NumpyArrayWrapper):
                NumpyUnpickler.load_build(self)
                return
            pickle._Unpickler.load_build(self)  # type: ignore[attr-defined]
            wrapper = self.stack[-1]
            if getattr(getattr(wrapper, "dtype", None), "hasobject", False):
                self.stack[-1] = self.nested()
            else:
                self.stack[-1] = wrapper.read(self, self.ensure_native_byte_order)

        def nested(self) -> Any:
            """The object array a NumpyArrayWrapper announces, read from its nested pickle
            by this same class (joblib's own reader would use a plain unpickler)."""
            from joblib.numpy_pickle import _ensure_native_byte_order

            array = RestrictedUnpickler("", self.file_handle, self.ensure_native_byte_order)
            loaded = array.load()
            if not isinstance(loaded, self.np.ndarray):
                raise pickle.UnpicklingError(f"an object array's nested pickle holds "
                                             f"{type(loaded).__name__}, not an array")
            return _ensure_native_byte_order(loaded) if self.ensure_native_byte_order \
                else loaded

        dispatch[pickle.BUILD[0]] = load_build

    return RestrictedUnpickler("", fileobj, True)


class UntrustedValue(UntrustedGlobal):
    """The unpickled model holds a value that would make it run other code than its
    own: an attribute outside ``VALUE_RULES``, or a function."""

    def __init__(self, path: str, value: Any, why: str):
        pickle.UnpicklingError.__init__(
            self, f"refusing to load a model artifact whose {path} is {_shown(value)}: "
            f"{why}; the restriction can be lifted (--allow-pickle, inference.allow_pickle)")
        self.name = path


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


_METHODS = frozenset({"predict_proba", "decision_function", "predict"})
# Attributes of scikit-learn objects that choose what code runs, and what each may hold:
# a set of values, or a test of the value. An attribute absent or None elsewhere is fine.
VALUE_RULES: dict[str, tuple[str, Any]] = {
    "memory": ("joblib's cache is read back with an unrestricted unpickler", {None}),
    "stack_method_": ("it names the method called on each estimator",
                      lambda v: isinstance(v, (list, tuple))
                      and all(m in _METHODS for m in v)),
    "response_method": ("it names the method called on the estimator",
                        lambda v: v in _METHODS | {"auto"} or (
                            isinstance(v, (list, tuple)) and all(m in _METHODS for m in v))),
    "input": ("a vectoriser would open each text as a file", {"content"}),
    "analyzer": ("only scikit-learn's own analysers run", {"word", "char", "char_wb"}),
    "tokenizer": ("only scikit-learn's own tokeniser runs", {None}),
    "preprocessor": ("only scikit-learn's own preprocessor runs", {None}),
    "func": ("FunctionTransformer would call it on every batch", {None}),
    "inverse_func": ("FunctionTransformer would call it", {None}),
    "importance_getter": ("it names what is read for feature importances",
                          lambda v: v == "auto" or (isinstance(v, str) and all(
                              part.isidentifier() for part in v.split("."))
                              and v.endswith("_"))),
}
_PLAIN = (str, bytes, int, float, bool, type(None), type)  # nothing to walk into
_CALLABLE_TYPES = (types.FunctionType, types.BuiltinFunctionType, types.MethodType,
                   types.MethodDescriptorType, types.WrapperDescriptorType,
                   types.MethodWrapperType, types.BuiltinMethodType, staticmethod,
                   classmethod, property)


def check_values(model: Any, trusted_types: Iterable[str] = ()) -> None:
    """Refuse (``UntrustedValue``) a model whose object graph holds a function, or a
    scikit-learn object with an attribute outside ``VALUE_RULES``, unless the value is
    a class trusted by name (``trusted_types``) or an instance of one (a tokeniser of
    the user's own, trusted); set every ``n_jobs`` in it to None. Objects of other
    classes are walked into but their attributes are theirs; arrays of numbers are not
    walked."""
    import numpy as np

    trusted = frozenset(trusted_types)

    def users_own(value: Any) -> bool:
        cls = value if isinstance(value, type) else type(value)
        return f"{cls.__module__}.{cls.__qualname__}" in trusted

    seen: set[int] = set()
    todo: list[tuple[str, Any]] = [("model", model)]

    def walk(path: str, items: Iterable[tuple[Any, Any]]) -> None:
        todo.extend((f"{path}[{k!r}]", v) for k, v in items if not isinstance(v, _PLAIN))

    while todo:
        path, obj = todo.pop()
        if id(obj) in seen or isinstance(obj, _PLAIN):
            continue
        seen.add(id(obj))
        if isinstance(obj, _CALLABLE_TYPES):
            raise UntrustedValue(path, obj, "a function, which the model would call")
        if isinstance(obj, np.ndarray):
            if obj.dtype.hasobject:
                walk(path, enumerate(obj.ravel().tolist()))
            continue
        if isinstance(obj, dict):
            walk(path, obj.items())
            continue
        if isinstance(obj, (list, tuple, set, frozenset)):
            walk(path, enumerate(obj))
            continue
        state = getattr(obj, "__dict__", None)
        if not isinstance(state, dict):
            continue
        if (type(obj).__module__ or "").split(".")[0] == "sklearn":
            for name, (why, allowed) in VALUE_RULES.items():
                value = state.get(name)
                if value is not None and not users_own(value) and not (
                        allowed(value) if callable(allowed) else
                        isinstance(value, str) and value in allowed):
                    raise UntrustedValue(f"{path}.{name}", value, why)
            if state.get("n_jobs") is not None:
                state["n_jobs"] = None
        todo += [(f"{path}.{k}", v) for k, v in state.items()]


def check_globals(names: Iterable[str], policy: Policy) -> None:
    """Raise ``UntrustedGlobal`` for the first of ``names`` (``module.name``, as recorded
    in a model's metadata) that ``policy`` refuses by name alone; imports nothing (the
    launcher checks this without loading scikit-learn; loading checks the rest)."""
    if policy.allow_pickle:
        return
    for qualified in names:
        if qualified in TRUSTED_FUNCTIONS or qualified in TRUSTED_CLASSES or \
                qualified in policy.trusted_types:
            continue
        module, _, name = qualified.rpartition(".")
        why = _refusal_by_name(module, name)
        if why:
            raise UntrustedGlobal(qualified, why)


def load_restricted(data: bytes, policy: Policy) -> tuple[Any, list[str]]:
    """The object a joblib artifact holds, and the globals it used, under ``policy``."""
    from joblib.numpy_pickle import _validate_fileobject_and_memmap

    with _validate_fileobject_and_memmap(io.BytesIO(data), "", None) as (fileobj, _):
        if isinstance(fileobj, str):  # joblib < 0.10 wrote companion files
            raise pickle.UnpicklingError("artifact written by joblib < 0.10; save it again")
        globals_used: set[str] = set()
        obj = _restricted_unpickler(fileobj, policy, globals_used).load()
    if not policy.allow_pickle:
        check_values(obj, policy.trusted_types)
    return obj, sorted(globals_used)
