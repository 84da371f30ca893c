"""Pipeline construction and a worker's operations without Beam's repeated introspection.

Building a scoring graph, Beam calls ``PipelineOptions.view_as`` about 400 times and
``userstate.get_dofn_specs`` about 220 times. Each ``view_as`` parses all the options'
flags again with a new argparse parser; each ``get_dofn_specs`` computes
``inspect.signature`` of every method of a DoFn (about 6,500 signatures in all). Both
give the same answer every time for the same object, and together they cost about
0.3 s of a run's single-core start-up (``bench/README.md``, start-up).

An SDK worker repeats the same introspection for every stage it runs: for each ParDo it
unpickles a new DoFn object, and Beam's ``DoFnSignature`` calls ``get_dofn_specs`` twice
and wraps ``process``, ``setup`` and the rest, taking the signature of each method
again: a ``DoFnSignature`` of a one-method DoFn took 2.1 ms (0.5 ms with the signature
cache below), per ParDo, worker and stage. A 4,000-document run at 8 workers builds 142 ParDo
operations; with the caches installed in the workers, the workers' Python CPU (yappi,
all 8 together) fell from 5.4-6.6 s to 3.9-4.4 s, and the part that builds the stages'
operations from 1.7-2.2 s to 0.6-0.8 s (``bench/README.md``). The methods are the
same function objects every time (a DoFn's class is imported, and most of its methods
are inherited from ``DoFn``), so their signatures can be kept. The fork server's zygote
installs the caches too (``engine.forkserver``), so every worker it forks has them.

``memoize_construction`` makes each answer computed once, once per process:

- ``view_as``: one view per (options object, view class). A view holds nothing of its
  own: reading or setting an option goes to the options' shared ``_all_options`` dict,
  which the view's first making filled with the defaults of its class. A cached view
  is used only while that still holds (the same dict, every one of its options in it);
  otherwise a new view is made, as Beam would.
- ``get_dofn_specs``: one answer per DoFn object (its state and timer specs, read from
  its methods' declared parameters, which Beam never replaces after making a DoFn),
  returned as new sets each time.
- ``core.get_function_args_defaults`` (through which ``get_function_arguments``,
  ``MethodWrapper`` and ``get_dofn_specs`` inspect): one answer per plain Python
  function, and per method bound to one (whose signature lacks the first parameter),
  checked against what such a signature is made of (``__code__``, ``__defaults__`` and
  ``__kwdefaults__``, compared by identity), so a function changed since is inspected
  again; returned as new lists each time. A function whose signature ``inspect`` takes
  from elsewhere (it has ``__wrapped__``, ``__signature__`` or a partial method's
  attribute: a decorated function, say) and any other callable (a class, a
  ``functools.partial``, a builtin, an object with ``__call__``) is inspected every
  time.

The caches hold their keys weakly: options, DoFns and functions are freed as before
(unless an option's value refers back to its own options object). Beam's direct runner for
bundles imports ``get_dofn_specs`` by name and keeps the original; beamscore does not
use it. The patch is written for Beam 2.77: with another version, or other signatures,
nothing is installed and a warning says so.
"""

from __future__ import annotations

import inspect
import logging
import threading
import types
import weakref
from typing import Any

import apache_beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.transforms import core, userstate

_LOG = logging.getLogger(__name__)
_BEAM = "2.77."
_VIEW_AS = PipelineOptions.view_as
_GET_DOFN_SPECS = userstate.get_dofn_specs
_ARGS_DEFAULTS = core.get_function_args_defaults
_SIGNATURES = {"view_as": ["self", "cls"], "get_dofn_specs": ["dofn"],
               "get_function_args_defaults": ["f"]}
ArgsDefaults = tuple[list[str], list[Any]]

# options object -> {view class: (view, the names of the view's options)}
_views: weakref.WeakKeyDictionary[Any, dict[type, tuple[Any, frozenset[str]]]] = \
    weakref.WeakKeyDictionary()
_specs: weakref.WeakKeyDictionary[Any, tuple[set[Any], set[Any]]] = \
    weakref.WeakKeyDictionary()
# Attributes through which inspect takes a function's signature from something else.
_ELSEWHERE = frozenset({"__wrapped__", "__signature__", "_partialmethod", "__partialmethod__"})
# function -> {bound?: (what its signature is made of, its answer)}
_args: weakref.WeakKeyDictionary[types.FunctionType,
                                 dict[bool, tuple[tuple[Any, ...], ArgsDefaults]]] = \
    weakref.WeakKeyDictionary()
_args_lock = threading.Lock()  # a worker builds its stages' operations in several threads


def _view_as(self: Any, cls: type) -> Any:
    try:
        views = _views.setdefault(self, {})
    except TypeError:  # not weakly referenceable or not hashable: Beam's own way
        return _VIEW_AS(self, cls)
    cached = views.get(cls)
    if cached is not None:
        view, names = cached
        if view._all_options is self._all_options and self._all_options.keys() >= names:
            return view
    view = _VIEW_AS(self, cls)
    views[cls] = (view, frozenset(view._visible_option_list()))
    return view


def _get_dofn_specs(dofn: Any) -> tuple[set[Any], set[Any]]:
    try:
        found = _specs.get(dofn)
    except TypeError:
        return _GET_DOFN_SPECS(dofn)
    if found is None:
        found = _GET_DOFN_SPECS(dofn)
        try:
            _specs[dofn] = found
        except TypeError:
            pass
    state, timers = found
    return set(state), set(timers)


def _args_defaults(f: Any) -> ArgsDefaults:
    bound = isinstance(f, types.MethodType)
    fn = f.__func__ if bound else f
    if type(fn) is not types.FunctionType or not _ELSEWHERE.isdisjoint(fn.__dict__):
        return _ARGS_DEFAULTS(f)
    made_of = (fn.__code__, fn.__defaults__, fn.__kwdefaults__)
    with _args_lock:
        kept = _args.get(fn, {}).get(bound)
    if kept is None or any(a is not b for a, b in zip(kept[0], made_of, strict=True)):
        args, defaults = _ARGS_DEFAULTS(f)
        kept = (made_of, (list(args), list(defaults)))
        with _args_lock:
            _args.setdefault(fn, {})[bound] = kept
    args, defaults = kept[1]
    return list(args), list(defaults)


def memoize_construction() -> bool:
    """Install the caches (idempotent); False, with a warning, when this is not the
    Beam they were written for."""
    if not apache_beam.__version__.startswith(_BEAM):
        _LOG.warning("Beam %s is not %sx: pipeline construction is not memoized",
                     apache_beam.__version__, _BEAM)
        return False
    for name, original in (("view_as", _VIEW_AS), ("get_dofn_specs", _GET_DOFN_SPECS),
                           ("get_function_args_defaults", _ARGS_DEFAULTS)):
        if list(inspect.signature(original).parameters) != _SIGNATURES[name]:
            _LOG.warning("this Beam's %s%s is not the expected one: pipeline construction "
                         "is not memoized", name, inspect.signature(original))
            return False
    PipelineOptions.view_as = _view_as  # type: ignore[method-assign,assignment]
    userstate.get_dofn_specs = _get_dofn_specs
    core.get_function_args_defaults = _args_defaults
    return True
