"""The sink's settings: the ``sink`` section of the configuration, declared once.

``SinkConfig`` is both the ``sink`` section of ``pipelines.configuration.config.Config``
and the base of ``store.session.DatabaseSettings`` (which adds the database URL), so a
new sink key is one field here: the configuration, its flag, its documentation and the
session's settings all follow. Each field carries the configuration schema's metadata:
``help`` (one line), ``template`` (False: not a Flex Template parameter), the values it
takes (``min``, ``nonempty`` ...), and for a template parameter its ``label``, ``regex``
and ``note`` (see ``pipelines.configuration.schema``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, kw_only=True)
class SinkConfig:
    """Database writes: batching, the job-wide rate limit and connection cap, retries,
    the database password's environment variable and the tranche leases."""

    batch_rows: int = field(default=5_000, metadata={
        "help": "rows buffered per database write", "min": 1,
        "label": "Rows per database write"})
    batch_bytes: int = field(default=16 * 1024 * 1024, metadata={
        "help": "bytes buffered per database write", "min": 1, "template": False})
    max_rows_per_second: float = field(default=0.0, metadata={
        "help": "rows per second for the whole job (0 = unlimited)", "min": 0,
        "label": "Job-wide rows per second (0 = unlimited)"})
    max_connections: int = field(default=4, metadata={
        "help": "concurrent database connections for the whole job", "min": 1,
        "label": "Job-wide database connections"})
    statement_timeout_ms: int = field(default=30_000, metadata={
        "help": "statement and lock timeout", "min": 1, "template": False})
    max_retries: int = field(default=8, metadata={
        "help": "retries of a transient database error", "min": 0, "template": False})
    connect_timeout_seconds: int = field(default=300, metadata={
        "help": "seconds to wait for a database that is down, then exit 75",
        "min": 0, "template": False})
    password_env: str = field(default="PGPASSWORD", metadata={
        "help": "environment variable that holds the database password", "nonempty": True,
        "label": "Environment variable with the database password",
        "regex": "^[A-Za-z_][A-Za-z0-9_]*$"})
    redis_url: str = field(default="", metadata={
        "help": "Redis for a job-wide rate limit and connection cap (several machines)",
        "label": "Redis URL (no password)",
        "regex": "^rediss?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[0-9]{1,2})?$",
        "note": "redis://host:port/db, without credentials."})
    lease_seconds: int = field(default=120, metadata={
        "help": "tranche lease of a run, renewed every quarter of it", "min": 2,
        "template": False})
    detached_lease_seconds: int = field(default=43_200, metadata={
        "help": "tranche lease of a run whose launcher does not wait for its job (a Flex "
                "Template launch); the job frees it at its end", "min": 2, "template": False})
    state_dir: str = field(default="", metadata={
        "help": "directory of the host's limiter state (default <temp>/beamscore)",
        "template": False})


def sink_values(sink: SinkConfig) -> dict[str, Any]:
    """Every key of the ``sink`` section by name, to build a subclass's settings from it."""
    return {f.name: getattr(sink, f.name) for f in dataclasses.fields(SinkConfig)}
