"""A process's start-up with the garbage collector off, its objects frozen after.

Importing Beam, pandas, pyarrow and scikit-learn makes a few hundred thousand objects
that live until the process exits. With the collector on, CPython scans all of them
again at every full collection its growth sets off: 0.25-0.28 s of the launcher's
1.7-2.0 s of imports, and 0.11-0.15 s of the fork server's preload (the zygote's
scikit-learn import), both on the path to the first worker (``bench/README.md``).
``start_up()`` runs a block with the collector off, then moves every object the process
holds into the permanent generation (``gc.freeze``), which later collections skip, and
turns the collector back on if it was on. A forked child (the fork server, its
workers) inherits the frozen objects, so its collections skip them too and never write
to those pages (which would copy them into the child).

The cost: reference cycles that became garbage during the block are frozen too, never
freed (about 1 MiB after the launcher's imports).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def start_up() -> Iterator[None]:
    """Run the block (imports, objects kept until exit) with the garbage collector
    off; afterwards freeze every object and restore the collector's previous state,
    also when the block raises."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()
