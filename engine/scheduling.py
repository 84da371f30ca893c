"""Scoring workers as batch work for the kernel's scheduler: fewer switches between them.

Each SDK worker scores in one thread that needs a core for as long as it has chunks.
With more workers than cores (``--workers 8`` on 2 cores; or the launcher, the fork
server and a database sharing 16 cores with 16 workers) Linux's fair scheduler gives
every runnable worker a short turn (a "slice": 1.4 ms on the 2-core bench host) and
lets a worker that wakes up (from a database lock, a gRPC reply) preempt the one running:
thousands of switches a second, each leaving the next worker with cold caches.

``batch_policy`` marks the calling process as batch work: policy ``SCHED_BATCH`` (a
waking batch task does not preempt the running one) and, on kernels that take one
(Linux 6.12 and later, the EEVDF scheduler), a longer slice request (``SLICE_NS``,
``sched_attr.sched_runtime``). Both are inherited across ``fork``: the fork server's
zygote calls it once and every worker it forks runs so. The launcher, whose runner
answers the workers, keeps the default policy, so it still preempts a worker at once
when a reply is due. Neither needs a privilege; the CPU share of each process is
unchanged (no nice level), only how often the scheduler switches between them.

Measured on 2 cores with 8 workers (``bench/README.md``): 200,000 documents 4 % shorter
(medians of 6 alternating pairs, system CPU 2.0 -> 1.9 s), 1,000,000 documents 6 %
shorter (user CPU 27.4-28.0 -> 25.2-25.8 s); at 2 workers (one per core) no change.
"""

from __future__ import annotations

import ctypes
import logging
import os
import struct
import sys

_LOG = logging.getLogger(__name__)

SLICE_NS = 30_000_000  # the slice a batch worker asks for: 30 ms (the kernel's limit is 100)
_SYS_SCHED_SETATTR = {"x86_64": 314, "aarch64": 274}
# struct sched_attr (its first version, 48 bytes): size, policy, flags, nice,
# priority, runtime, deadline, period.
_SCHED_ATTR = struct.Struct("=IIQiIQQQ")


def batch_policy(slice_ns: int = SLICE_NS) -> bool:
    """Make the calling process (and the children it forks later) batch work: policy
    ``SCHED_BATCH`` with a request for ``slice_ns``-long slices, or ``SCHED_BATCH``
    alone where the kernel does not take the request. False, changing nothing, where
    the platform has no ``SCHED_BATCH`` or refuses it."""
    if not sys.platform.startswith("linux") or not hasattr(os, "SCHED_BATCH"):
        return False
    if _set_attr(os.SCHED_BATCH, slice_ns):
        return True
    try:
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    except OSError as exc:
        _LOG.debug("scheduling policy unchanged: %s", exc)
        return False
    return True


def _set_attr(policy: int, slice_ns: int) -> bool:
    """``sched_setattr(2)`` for this process: ``policy`` with a slice request; False
    where there is no such call here or the kernel refuses the attributes."""
    found = _sched_attr_call()
    if found is None:
        return False
    libc, number = found
    attr = ctypes.create_string_buffer(
        _SCHED_ATTR.pack(_SCHED_ATTR.size, policy, 0, 0, 0, slice_ns, 0, 0))
    if libc.syscall(number, 0, attr, 0) != 0:
        _LOG.debug("sched_setattr refused: %s", os.strerror(ctypes.get_errno()))
        return False
    return True


def slice_request(pid: int = 0) -> int | None:
    """The slice ``pid`` (0: this process) asks for, in nanoseconds (the kernel's
    default when it asked for none), or None where it cannot be read here."""
    found = _sched_attr_call()
    if found is None:
        return None
    libc, number = found
    attr = ctypes.create_string_buffer(_SCHED_ATTR.size)
    if libc.syscall(number + 1, pid, attr, _SCHED_ATTR.size, 0) != 0:  # sched_getattr
        return None
    runtime: int = _SCHED_ATTR.unpack(attr.raw)[5]
    return runtime


def _sched_attr_call() -> tuple[ctypes.CDLL, int] | None:
    """The C library and the number of ``sched_setattr`` (``sched_getattr`` is the
    next), or None where this platform has neither."""
    number = _SYS_SCHED_SETATTR.get(os.uname().machine)
    if not sys.platform.startswith("linux") or number is None:
        return None
    try:
        return ctypes.CDLL(None, use_errno=True), number
    except OSError:
        return None
