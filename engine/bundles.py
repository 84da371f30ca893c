"""Stages without per-worker round trips: FnApiRunner skips the empty parts of a bundle.

With W workers, Beam's ``ParallelBundleManager`` cuts every stage's input into W parts
and sends each part to a worker as a bundle, whether it holds elements or not. Most
stages of a scoring run are small (a few chunk descriptors, one summary per tranche,
one impulse): W - 1 of their parts are empty, and each still costs a gRPC round trip
to a worker that starts and finishes a bundle over no elements. With about a dozen
such stages that is a tail that grows with W (measured on 2 cores, 200,000 documents:
0.3 s after the last scored batch at W = 2, 1.3 s at W = 16).

``skip_empty_bundles`` replaces ``BundleManager.process_bundle``, once per process, by
a version that answers a part without elements and without timers itself, with an
empty response; every other part goes to a worker as before. Only the parts of a split
bundle (lists of encoded chunks) can be skipped: a single worker's bundle and a stateful
stage's get whole buffers and are never skipped. The Beam model promises no bundle to a
worker that has no elements (a runner chooses the bundling), so a DoFn sees no
difference, except that ``start_bundle``/``finish_bundle`` are not called for nothing;
the runner's bookkeeping neither (a worker's empty bundle returns no data, no residuals
and no splits). One visible consequence: RunInference reports a model load from the
bundles that scored something, so the summary's "model loads" counts the workers that
got documents to score. The patch depends on the signature of a private Beam method:
when it differs (another Beam version), it is not installed and a warning says so.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

from apache_beam.portability.api import beam_fn_api_pb2
from apache_beam.runners.portability.fn_api_runner import fn_runner

_LOG = logging.getLogger(__name__)
_ORIGINAL = fn_runner.BundleManager.process_bundle
_PARAMETERS = ["self", "inputs", "expected_outputs", "fired_timers", "expected_output_timers",
               "dry_run"]


def _empty(inputs: Any) -> bool:
    """Whether every input of a part is a list of encoded chunks holding no bytes (a
    whole buffer, as a single worker's bundle gets, is never skipped)."""
    return all(isinstance(chunks, list) and not any(chunks) for chunks in inputs.values())


def _process_bundle(self: Any, inputs: Any, expected_outputs: Any, fired_timers: Any,
                    expected_output_timers: Any, dry_run: bool = False) -> Any:
    if (not inputs or not _empty(inputs) or fired_timers or expected_output_timers
            or dry_run):
        return _ORIGINAL(self, inputs, expected_outputs, fired_timers,
                         expected_output_timers, dry_run)
    empty = beam_fn_api_pb2.InstructionResponse(
        process_bundle=beam_fn_api_pb2.ProcessBundleResponse())
    return empty, []


def skip_empty_bundles() -> bool:
    """Install the skipping ``process_bundle`` (idempotent); False, with a warning, when
    Beam's method is not the one it was written for."""
    if list(inspect.signature(_ORIGINAL).parameters) != _PARAMETERS:
        _LOG.warning("this Beam's BundleManager.process_bundle%s is not the expected one: "
                     "every stage keeps one bundle per worker", inspect.signature(_ORIGINAL))
        return False
    fn_runner.BundleManager.process_bundle = _process_bundle  # type: ignore[method-assign]
    return True
