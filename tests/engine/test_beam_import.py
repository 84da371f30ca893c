"""Beam without its unused connectors (``engine.beam_import``): while Beam imports, the
skipped modules are empty stand-ins; afterwards each is the real module to whoever
imports it; the console script installs the hook, a library caller's Beam is whole."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from engine import beam_import
from tests.engine.helpers import console_reports, in_fresh_python

ROOT = Path(__file__).resolve().parents[2]
# Which of the skipped connectors' modules and libraries a fresh interpreter holds
# after ``import apache_beam``, and whether each connector still imports for real.
_AFTER_IMPORT = f"""
import json, sys
import apache_beam
held = sorted(n for n in ("pymongo", "google.cloud.bigquery", "google.cloud.pubsub",
                          *{beam_import.SKIPPED!r}) if n in sys.modules)
namespace = sorted(n for n in ("WriteToBigQuery", "ReadFromPubSub", "ReadFromMongoDB",
                               "mongodbio") if hasattr(apache_beam.io, n))
from apache_beam.io.gcp.bigquery import WriteToBigQuery
from apache_beam.io.gcp import pubsub
from apache_beam.io import mongodbio
import apache_beam.transforms.xlang.io as xlang_io
real = [WriteToBigQuery.__module__, pubsub.ReadFromPubSub.__module__,
        mongodbio.ReadFromMongoDB.__module__, xlang_io.__name__]
hooks = [type(f).__name__ for f in sys.meta_path if type(f).__name__ == "_Hook"]
print(json.dumps({{"held": held, "namespace": namespace, "real": real, "hooks": hooks}}))
"""
_REAL = ["apache_beam.io.gcp.bigquery", "apache_beam.io.gcp.pubsub",
         "apache_beam.io.mongodbio", "apache_beam.transforms.xlang.io"]


def test_beam_imports_without_the_skipped_connectors_which_import_for_real_later() -> None:
    seen = in_fresh_python("from engine.beam_import import skip_unused_connectors\n"
                           "assert skip_unused_connectors()\n" + _AFTER_IMPORT)
    assert seen == {"held": [], "namespace": [], "real": _REAL, "hooks": []}


def test_without_the_hook_beam_imports_every_connector() -> None:
    """What the hook saves: without it, ``import apache_beam`` loads them all."""
    seen = in_fresh_python(_AFTER_IMPORT)
    assert set(seen["held"]) >= {"pymongo", "google.cloud.bigquery", *beam_import.SKIPPED}
    assert "WriteToBigQuery" in seen["namespace"] and seen["real"] == _REAL


def test_a_beam_imported_already_or_of_another_version_is_left_as_it_is(
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert "apache_beam" in sys.modules  # this test process imported it
    assert not beam_import.skip_unused_connectors()
    monkeypatch.delitem(sys.modules, "apache_beam")
    monkeypatch.setattr(beam_import, "_beam_version", lambda: "3.0.0")
    assert not beam_import.skip_unused_connectors()
    assert not any(isinstance(f, beam_import._Hook) for f in sys.meta_path)


def test_the_console_scripts_command_imports_beam_without_them(tmp_path: Path) -> None:
    """``score --help`` imports Beam (its arguments' module does); the top-level help
    imports no Beam at all, hook or not."""
    held = "import sys\nreturn [n in sys.modules for n in " \
           "('apache_beam', 'pymongo', 'google.cloud.bigquery')]"
    for args, expected in ((["score", "--help"], [True, False, False]),
                           (["--help"], [False, False, False])):
        assert console_reports(tmp_path, held, args) == [expected]
