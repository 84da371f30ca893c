"""The PostgreSQL server the tests use (``BEAMSCORE_TEST_PG``, default the local one)."""

from __future__ import annotations

import os
from typing import Any

import psycopg

PG = os.environ.get("BEAMSCORE_TEST_PG", "postgresql://127.0.0.1:5432")


def pg_admin() -> psycopg.Connection[Any]:
    """An autocommit connection to the server's ``test`` database."""
    return psycopg.connect(f"{PG}/test", autocommit=True)
