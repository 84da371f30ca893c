"""One thread of math per process: the BLAS and OpenMP libraries' pools of one thread.

numpy's OpenBLAS (MKL in some builds) and OpenMP, which compiled scikit-learn
estimators use, each start a pool of threads per process, one per CPU, and after a call
into the library those threads keep spinning for more work for a while before they
sleep. beamscore already runs one process per worker, each scoring in one thread: a pool
in every process only adds threads that take the same cores from the workers. In a
200,000-document run at 2 workers on the 2-core bench host, the launcher's and the fork
server's pool threads spun for 0.26 s of CPU during start-up, when those two processes
each need a core (``perf`` samples of ``blas_thread_server``); at 8 workers every worker
has a pool of its own (``bench/README.md``).

``limit_math_threads`` sets ``VARIABLES`` to 1 in the environment, each unless it is
set already (a value the user chose stays). The libraries read them when they are
loaded, so the console script calls it before anything imports numpy; every process it
forks or spawns (the fork server and its workers, Beam's spawned workers) inherits them,
and the image sets the same for Dataflow's workers (``Dockerfile``).
"""

from __future__ import annotations

import os

VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def limit_math_threads() -> None:
    """One thread for each math library of this process and its children, unless the
    environment names another number (call it before numpy is imported)."""
    for name in VARIABLES:
        os.environ.setdefault(name, "1")
