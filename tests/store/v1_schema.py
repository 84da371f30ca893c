"""The schema version 1 databases have (as ``beamscore`` created them before version 2),
with a few rows, for the migration tests. Frozen: never edit to match later versions."""

from __future__ import annotations

from typing import Any

V1_DDL = [
    "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS predictions (doc_id TEXT NOT NULL, tranche TEXT NOT NULL, "
    "label TEXT NOT NULL, score DOUBLE PRECISION NOT NULL, top_k TEXT NOT NULL, "
    "model_name TEXT NOT NULL, model_version TEXT NOT NULL, model_sha256 TEXT NOT NULL, "
    "run_id TEXT NOT NULL, scored_at TEXT NOT NULL, source_file TEXT NOT NULL, "
    "metadata TEXT, PRIMARY KEY (doc_id, model_name, model_version))",
    "CREATE TABLE IF NOT EXISTS dead_letters (run_id TEXT NOT NULL, tranche TEXT NOT NULL, "
    "source_file TEXT NOT NULL, position BIGINT NOT NULL, stage TEXT NOT NULL, "
    "reason TEXT NOT NULL, payload TEXT NOT NULL, "
    "PRIMARY KEY (run_id, source_file, position, stage))",
    "CREATE TABLE IF NOT EXISTS runs (run_id TEXT NOT NULL, started_at TEXT NOT NULL, "
    "finished_at TEXT, status TEXT NOT NULL, config TEXT NOT NULL, model TEXT NOT NULL, "
    "counts TEXT, PRIMARY KEY (run_id))",
    "CREATE TABLE IF NOT EXISTS tranches (tranche TEXT NOT NULL, model_name TEXT NOT NULL, "
    "model_version TEXT NOT NULL, fingerprint TEXT NOT NULL, files TEXT NOT NULL, "
    "run_id TEXT NOT NULL, status TEXT NOT NULL, counts TEXT, "
    "lease_until DOUBLE PRECISION, started_at TEXT NOT NULL, finished_at TEXT, "
    "PRIMARY KEY (tranche, model_name, model_version))",
    "INSERT INTO schema_version VALUES (1)",
]
T0 = "2026-01-02T03:04:05.678+00:00"
V1_ROWS: list[tuple[str, tuple[Any, ...]]] = [
    ("INSERT INTO predictions VALUES ({})", (
        "d1", "2026-01-01", "billing", 0.9, '[["billing", 0.9]]', "demo", "1", "ab" * 32,
        "run-1", T0, "/in/dt=2026-01-01/a.jsonl", '{"channel": "email"}')),
    ("INSERT INTO predictions VALUES ({})", (
        "d2", "2026-01-01", "returns", 0.6, '[["returns", 0.6]]', "demo", "1", "ab" * 32,
        "run-1", T0, "/in/dt=2026-01-01/a.jsonl", None)),
    ("INSERT INTO dead_letters VALUES ({})", (
        "run-1", "2026-01-01", "/in/dt=2026-01-01/a.jsonl", 3, "read", "malformed JSON", "{")),
    ("INSERT INTO runs VALUES ({})", (
        "run-1", T0, T0, "succeeded", '{"workers": 1}', "demo:1", '{"total": {"read": 3}}')),
    ("INSERT INTO tranches VALUES ({})", (
        "2026-01-01", "demo", "1", "fp", '[{"path": "a"}]', "run-1", "completed",
        '{"read": 3}', None, T0, T0)),
]


def create_v1(execute: Any, placeholder: str) -> None:
    """Build the version 1 schema and rows through ``execute(sql, params)``."""
    for ddl in V1_DDL:
        execute(ddl, ())
    for sql, row in V1_ROWS:
        execute(sql.format(", ".join([placeholder] * len(row))), row)
