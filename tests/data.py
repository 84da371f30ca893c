"""Test data and probes shared by several test packages."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from pathlib import Path
from typing import Any


def sqlite_rows(db_path: Path, sql: str) -> list[tuple[Any, ...]]:
    """Query through an independent connection: what another process would see."""
    conn = sqlite3.connect(db_path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def numbered_jsonl(n: int) -> tuple[bytes, dict[int, str]]:
    """Lines of varied length with blank and malformed lines; {line number: id or DEAD}."""
    parts: list[bytes] = []
    expected: dict[int, str] = {}
    for i in range(n):
        lineno = len(parts) + 1
        if i % 9 == 4:
            parts.append(b"")
            continue
        if i % 11 == 7:
            parts.append(b'{"id": "broken", "text": ')
            expected[lineno] = "DEAD"
            continue
        parts.append(json_line({"id": f"r{i}", "text": "w" * (i * 7 % 23)}))
        expected[lineno] = f"r{i}"
    return b"\n".join(parts) + b"\n", expected



def day_folder(root: Path, day: dt.date) -> Path:
    """``root/dt=YYYY-MM-DD``, created."""
    folder = root / f"dt={day.isoformat()}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def json_line(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def bundled_config(name: str) -> dict[str, Any]:
    """A bundled config file (``configs/<name>.yaml``) as YAML data."""
    import importlib.resources

    import yaml

    text = importlib.resources.files("configs").joinpath(f"{name}.yaml").read_text("utf-8")
    return yaml.safe_load(text) or {}


def flat_keys(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config data as ``{"section.key": value}``."""
    out: dict[str, Any] = {}
    for k, v in data.items():
        if isinstance(v, dict):
            out.update(flat_keys(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def query_rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    """The rows ``sql`` returns from the database ``url`` (SQLite or PostgreSQL)."""
    from store.database import connect

    db = connect(url)
    try:
        return db.execute(sql)
    finally:
        db.close()


def fail_first_writes(monkeypatch: Any, method: str, times: int) -> list[int]:
    """``SQLiteDatabase.<method>`` raises a transient error ("database is locked") on
    its first ``times`` calls, then writes; retry backoff is counted, not slept. Returns
    ``[failures left]``."""
    from store.backends.sqlite import SQLiteDatabase
    from store.database import TransientDatabaseError

    real = getattr(SQLiteDatabase, method)
    left = [times]

    def failing(self: SQLiteDatabase, rows: Any, fence: Any = None) -> int:
        if left[0]:
            left[0] -= 1
            raise TransientDatabaseError("database is locked")
        return int(real(self, rows, fence))

    monkeypatch.setattr(SQLiteDatabase, method, failing)
    monkeypatch.setattr("store.retry.time.sleep", lambda _: None)
    return left
