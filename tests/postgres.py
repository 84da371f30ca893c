"""The PostgreSQL server the tests use (``BEAMSCORE_TEST_PG``, default the local one):
admin connections, and the one check that says whether it is reachable.

``python -m tests.postgres`` runs that check alone (``make test`` does, before the
suite), printing how to start the server when it is down.
"""

from __future__ import annotations

import functools
import os
import sys
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
def unreachable() -> str | None:
    """Why the server cannot be used (one line, with how to start it), or None when it
    can; asked once a process."""
    try:
        with pg_admin(connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"{UNREACHABLE} {PG} ({reason}): {HOW_TO_START}"
    return None


def main() -> int:
    problem = unreachable()
    if problem:
        print(problem, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
