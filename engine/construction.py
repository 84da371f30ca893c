"""Pipeline construction without Beam's repeated introspection.

Building a scoring graph, Beam calls ``PipelineOptions.view_as`` about 400 times and
``userstate.get_dofn_specs`` about 220 times. Each ``view_as`` parses all the options'
flags again with a new argparse parser; each ``get_dofn_specs`` computes
``inspect.signature`` of every method of a DoFn (about 6,500 signatures in all). Both
give the same answer every time for the same object, and together they cost about
0.3 s of a run's single-core start-up (``bench/README.md``, start-up).

``memoize_construction`` makes both compute once per object, once per process:

- ``view_as``: one view per (options object, view class). A view holds nothing of its
  own: reading or setting an option goes to the options' shared ``_all_options`` dict,
  which the view's first making filled with the defaults of its class. A cached view
  is used only while that still holds (the same dict, every one of its options in it);
  otherwise a new view is made, as Beam would.
- ``get_dofn_specs``: one answer per DoFn object (its state and timer specs, read from
  its methods' declared parameters, which Beam never replaces after making a DoFn),
  returned as new sets each time.

The caches hold their keys weakly: options and DoFns are freed as before (unless an
option's value refers back to its own options object). Beam's direct runner for
bundles imports ``get_dofn_specs`` by name and keeps the original; beamscore does not
use it. The patch is written for Beam 2.77: with another version, or other signatures,
nothing is installed and a warning says so.
"""

from __future__ import annotations

import inspect
import logging
import weakref
from typing import Any

import apache_beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.transforms import userstate

_LOG = logging.getLogger(__name__)
_BEAM = "2.77."
_VIEW_AS = PipelineOptions.view_as
_GET_DOFN_SPECS = userstate.get_dofn_specs
_SIGNATURES = {"view_as": ["self", "cls"], "get_dofn_specs": ["dofn"]}

# options object -> {view class: (view, the names of the view's options)}
_views: weakref.WeakKeyDictionary[Any, dict[type, tuple[Any, frozenset[str]]]] = \
    weakref.WeakKeyDictionary()
_specs: weakref.WeakKeyDictionary[Any, tuple[set[Any], set[Any]]] = \
    weakref.WeakKeyDictionary()


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


def memoize_construction() -> bool:
    """Install both caches (idempotent); False, with a warning, when this is not the
    Beam they were written for."""
    if not apache_beam.__version__.startswith(_BEAM):
        _LOG.warning("Beam %s is not %sx: pipeline construction is not memoized",
                     apache_beam.__version__, _BEAM)
        return False
    for name, original in (("view_as", _VIEW_AS), ("get_dofn_specs", _GET_DOFN_SPECS)):
        if list(inspect.signature(original).parameters) != _SIGNATURES[name]:
            _LOG.warning("this Beam's %s%s is not the expected one: pipeline construction "
                         "is not memoized", name, inspect.signature(original))
            return False
    PipelineOptions.view_as = _view_as  # type: ignore[method-assign,assignment]
    userstate.get_dofn_specs = _get_dofn_specs
    return True
