"""A worker's operations built without compressing what never leaves the process.

An SDK worker builds each stage's operations from the stage's descriptor. For every
ParDo, Beam's ``bundle_processor`` unpickles the DoFn, pickles it again with its
windowing into the operation's spec, and the operation unpickles that spec twice (when
it is made and in ``setup``); combines go the same way. Beam's pickler compresses
every pickle with bz2 at level 9 and base64-encodes it, because pickles normally
travel in the pipeline's protos, and that compression was the largest single cost of
building a worker's operations: 26 ParDo specs a worker, 41 ms of bz2 per worker in a
4,000-document run at 8 workers (``bench/README.md``), paid again by every worker.

``plain_operation_pickles`` gives ``bundle_processor`` and ``operations`` (and only
them) a pickler whose ``dumps`` returns Beam's own cloudpickle bytes (the same pickler,
with Beam's reducers) behind a marker, uncompressed, and whose ``loads`` reads such
bytes back and hands everything else (the descriptor's pickles, made by the launcher)
to Beam's pickler. The spec bytes are made and read in the same worker, so nothing
outside the process sees the format; a ``loads`` still returns a new object each time.
When the pipeline picked another pickle library (``--pickle_library``) both functions
are Beam's own. Written for Beam 2.77: with another version nothing is installed and a
warning says so.
"""

from __future__ import annotations

import logging
from typing import Any

import apache_beam
from apache_beam.internal import cloudpickle_pickler, pickler
from apache_beam.runners.worker import bundle_processor, operations

_LOG = logging.getLogger(__name__)
_BEAM = "2.77."
# Cannot start base64 text (Beam's pickles): its alphabet has no NUL.
MARKER = b"\x00beamscore-plain-pickle\x00"


class _PlainPickler:
    """Beam's ``pickler`` module for in-process specs: ``dumps`` without bz2 and base64."""

    @staticmethod
    def dumps(o: Any, enable_trace: bool = True, use_zlib: bool = False,
              enable_best_effort_determinism: bool = False,
              enable_stable_code_identifier_pickling: bool = False) -> bytes:
        if pickler.desired_pickle_lib is not cloudpickle_pickler:
            return pickler.dumps(o, enable_trace, use_zlib, enable_best_effort_determinism,
                                 enable_stable_code_identifier_pickling)
        return MARKER + cloudpickle_pickler._dumps(
            o, enable_best_effort_determinism, enable_stable_code_identifier_pickling)

    @staticmethod
    def loads(encoded: Any, enable_trace: bool = True, use_zlib: bool = False) -> Any:
        if isinstance(encoded, bytes) and encoded.startswith(MARKER):
            return cloudpickle_pickler._loads(encoded[len(MARKER):])
        return pickler.loads(encoded, enable_trace, use_zlib)

    def __getattr__(self, name: str) -> Any:  # anything else: Beam's pickler
        return getattr(pickler, name)


def plain_operation_pickles() -> bool:
    """Install the plain pickler in Beam's worker modules (idempotent); False, with a
    warning, when this is not the Beam it was written for."""
    if not apache_beam.__version__.startswith(_BEAM) or not all(
            callable(getattr(cloudpickle_pickler, f, None)) for f in ("_dumps", "_loads")):
        _LOG.warning("Beam %s is not %sx: worker operations pickle their specs as Beam does",
                     apache_beam.__version__, _BEAM)
        return False
    plain = _PlainPickler()
    for module in (bundle_processor, operations):
        module.pickler = plain  # type: ignore[attr-defined]
    return True
