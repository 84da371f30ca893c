"""The PostgreSQL server the tests use (``BEAMSCORE_TEST_PG``, default the local one):
admin connections, the check that says whether it is reachable, and the server's lock.

Every postgres test holds the lock shared; a test that restarts the server holds it
exclusively, so that no other test (in this run, another xdist worker or another
checkout on the same host) uses the server while it goes down.

``python -m tests.postgres`` runs the check alone (``make test`` does, before the
suite), printing how to start the server when it is down.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import psycopg

PG = os.environ.get("BEAMSCORE_TEST_PG", "postgresql://127.0.0.1:5432")
UNREACHABLE = "PostgreSQL not reachable at"
HOW_TO_START = ("start it with `pg_ctlcluster --skip-systemctl-redirect "
                "$(ls /etc/postgresql | head -n1) main start` (or point BEAMSCORE_TEST_PG at "
                "a server), or leave its tests out with `make test-fast` or "
                "`pytest -m 'not postgres'`")


def pg_admin(connect_timeout: int = 10) -> psycopg.Connection[Any]:
    """An autocommit connection to the server's ``test`` database."""
    return psycopg.connect(f"{PG}/test", autocommit=True, connect_timeout=connect_timeout)


@functools.cache
def unreachable(attempts: int = 3) -> str | None:
    """Why the server cannot be used (one line, with how to start it), or None when it
    can; asked once a process, a few times a second apart (a restart takes a moment)."""
    for attempt in range(attempts):
        try:
            with pg_admin(connect_timeout=3) as conn:
                conn.execute("SELECT 1")
            return None
        except psycopg.Error as exc:
            text = str(exc).strip()
            reason = text.splitlines()[0] if text else type(exc).__name__
            if attempt + 1 < attempts:
                time.sleep(1.0)
    return f"{UNREACHABLE} {PG} ({reason}): {HOW_TO_START}"


def lock_path() -> str:
    """One lock file per server on this host, whichever checkout or user runs tests."""
    key = hashlib.sha256(PG.encode()).hexdigest()[:12]
    return os.path.join(tempfile.gettempdir(), f"beamscore-test-postgres-{key}.lock")


@contextlib.contextmanager
def server_lock(exclusive: bool) -> Iterator[None]:
    """Hold the server's lock, shared or exclusive, for the block."""
    fd = os.open(lock_path(), os.O_RDONLY | os.O_CREAT, 0o666)  # flock needs no write
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)  # releases the lock


def main() -> int:
    problem = unreachable()
    if problem:
        print(problem, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
