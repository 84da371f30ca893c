"""The allocator of scoring processes: glibc's, with transparent huge pages and one arena,
for Python, numpy and Arrow alike.

A worker allocates and frees tens of megabytes of numpy arrays per batch
(featurisation, TF-IDF, top-k). glibc hands such memory back to the kernel as soon as
it is freed (mmapped chunks, a trimmed heap top), so the next batch faults it in again,
4 KiB at a time: about 770,000 page faults and 3.0-3.7 s of system CPU in a
200,000-document run at 2 workers (``bench/README.md``). With ``TUNABLES`` the heap is
backed by transparent huge pages (``glibc.malloc.hugetlb=1``: madvise, 2 MiB a fault)
and every thread allocates from that heap (``glibc.malloc.arena_max=1``; glibc
otherwise gives threads arenas of their own, which huge pages do not back): about
120,000 faults, 1.8-2.4 s of system CPU, peak memory per worker unchanged.

Arrow allocates from that same heap too (``ARROW_POOL``: its system pool). Its default,
mimalloc, backs its own segments with huge pages in every worker, so each worker it is
forked into faults in and zeroes them afresh: at 8 workers on 2 cores that cost 0.7-1.1 s
of system CPU a run and about 350 MB of resident memory, against glibc's heap, which
the worker reuses batch after batch (``bench/README.md``).

glibc reads its tunables only when a process starts, so the console script executes
itself again with them, once, before anything heavy is imported (``reexec``; code
that ran before it in the first process runs again in the second): the
fork server and its workers are forked from it and inherit them, and Beam's spawned
workers get them through the environment. The image sets the same variables for
Dataflow's workers (``Dockerfile``). A ``GLIBC_TUNABLES`` already set, even to nothing,
is left as it is, Arrow's pool with it, and so is any C library other than glibc; an
``ARROW_DEFAULT_MEMORY_POOL`` already set is kept.
"""

from __future__ import annotations

import contextlib
import os
import sys

TUNABLES = "glibc.malloc.hugetlb=1:glibc.malloc.arena_max=1"
VARIABLE = "GLIBC_TUNABLES"
ARROW_POOL = "system"
ARROW_POOL_VARIABLE = "ARROW_DEFAULT_MEMORY_POOL"


def uses_glibc() -> bool:
    try:
        return os.confstr("CS_GNU_LIBC_VERSION") is not None
    except (ValueError, OSError):  # not a name this platform knows
        return False


def reexec() -> None:
    """Execute this process's command again with ``TUNABLES`` (and ``ARROW_POOL``, unless
    another pool is named) in its environment, unless
    the variable is set already, the C library is not glibc, or the command cannot be
    run again as it was: only a program file (``sys.argv[0]``: the console script, the
    module of ``python -m``, a script) can; a ``-c`` program, a program read from
    standard input and an interactive session run on as they are."""
    if VARIABLE in os.environ or not uses_glibc() or not _rerunnable():
        return
    os.environ[VARIABLE] = TUNABLES
    os.environ.setdefault(ARROW_POOL_VARIABLE, ARROW_POOL)
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:  # None: the descriptor was closed at start
            with contextlib.suppress(Exception):
                stream.flush()
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])


def _rerunnable() -> bool:
    return not sys.flags.interactive and os.path.isfile(sys.argv[0])
