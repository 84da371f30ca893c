"""Beam imported without the connectors a run never uses: a shorter start for every run.

``import apache_beam`` runs ``apache_beam.io``'s package, which imports every connector it
re-exports by name, whether a pipeline uses it or not: MongoDB (with ``pymongo``),
BigQuery and Pub/Sub (with their Google client libraries) and the cross-language IO
wrappers. On the 2-core bench host that is 0.27 s of the launcher's 0.73 s of Beam
imports, all before the fork server can start (``bench/README.md``).

``skip_unused_connectors`` installs an import hook, once, before anything imports Beam:
while the ``apache_beam`` package itself is being imported (and only then), each module
of ``SKIPPED`` is an empty stand-in, so ``apache_beam.io``'s ``from ... import *`` of it
adds nothing; as soon as ``apache_beam`` is imported the stand-ins and the hook are
gone. A module that imports a skipped connector afterwards
(``from apache_beam.io.gcp.bigquery import WriteToBigQuery``) gets the real one. What
differs is only ``apache_beam.io``'s namespace: it lacks the names those modules would
have added to it (``beam.io.WriteToBigQuery``, ``beam.io.ReadFromPubSub``, ...), which
beamscore does not use; import them from their own modules. Beam's local and Dataflow
runners, its filesystems (``gs://`` included) and its workers import none of them.

Only the console script installs it (``pipelines.cli``); a library caller's Beam is
Beam as it is. It depends on what ``apache_beam/io/__init__.py`` imports: with a Beam
other than ``BEAM``, or when Beam is already imported, nothing is installed.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import re
import sys
import types
from pathlib import Path
from typing import Any

BEAM = "2.77."
SKIPPED = ("apache_beam.io.mongodbio", "apache_beam.io.gcp.bigquery",
           "apache_beam.io.gcp.pubsub", "apache_beam.transforms.xlang.io")


class _StandIn(types.ModuleType):
    """An empty module: ``from <it> import *`` imports nothing."""

    __all__: list[str] = []


class _StandInLoader(importlib.abc.Loader):
    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        return _StandIn(spec.name)

    def exec_module(self, module: types.ModuleType) -> None:
        pass


class _Hook(importlib.abc.MetaPathFinder):
    """Stand-ins for ``SKIPPED`` while ``apache_beam`` imports; removes itself after."""

    def __init__(self) -> None:
        self._importing = False

    def find_spec(self, name: str, path: Any = None,
                  target: types.ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if self._importing:
            if name in SKIPPED:
                return importlib.machinery.ModuleSpec(name, _StandInLoader())
            return None
        if name != "apache_beam":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return None
        exec_module = spec.loader.exec_module

        def exec_beam(module: types.ModuleType) -> None:
            self._importing = True
            try:
                exec_module(module)
            finally:
                self._importing = False
                _remove(self)

        spec.loader.exec_module = exec_beam  # type: ignore[method-assign]
        return spec


def _remove(hook: _Hook) -> None:
    """Take the hook and every stand-in out: a later import gets the real module."""
    if hook in sys.meta_path:
        sys.meta_path.remove(hook)
    for name in SKIPPED:
        module = sys.modules.get(name)
        if not isinstance(module, _StandIn):
            continue
        del sys.modules[name]
        parent, _, child = name.rpartition(".")
        if getattr(sys.modules.get(parent), child, None) is module:
            delattr(sys.modules[parent], child)


def _beam_version() -> str:
    """The installed Beam's version, read from its ``version.py`` without importing it."""
    spec = importlib.util.find_spec("apache_beam")
    if spec is None or not spec.submodule_search_locations:
        return ""
    text = (Path(list(spec.submodule_search_locations)[0]) / "version.py").read_text()
    found = re.search(r"""^__version__ = ['"]([^'"]+)['"]""", text, re.MULTILINE)
    return found.group(1) if found else ""


def skip_unused_connectors() -> bool:
    """Install the hook (idempotent); False when Beam is imported already, is not the
    version it was written for, or cannot be found."""
    if any(isinstance(f, _Hook) for f in sys.meta_path):
        return True
    if "apache_beam" in sys.modules:
        return False
    try:
        if not _beam_version().startswith(BEAM):
            return False
    except OSError:
        return False
    sys.meta_path.insert(0, _Hook())
    return True
