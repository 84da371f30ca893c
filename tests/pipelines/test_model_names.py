"""Versions and aliases through the command line: nothing outside the model's folder."""

from __future__ import annotations

import json
from pathlib import Path

from tests.pipelines.helpers import run_cli


def test_promote_with_a_path_as_version_exits_nonzero_and_writes_nothing(
        registry_copy: str) -> None:
    result = run_cli("models", "promote", "demo", "1/../1", "--registry", registry_copy)
    assert result.rc != 0
    assert "invalid model version '1/../1'" in result.err
    aliases = Path(registry_copy) / "demo" / "aliases.json"
    assert json.loads(aliases.read_text()) == {"production": "1"}  # as it was


def test_score_refuses_a_version_smuggled_in_through_aliases_json(
        registry_copy: str, tmp_path: Path) -> None:
    (Path(registry_copy) / "demo" / "aliases.json").write_text(
        json.dumps({"production": "1/../1"}))
    out = tmp_path / "out"
    result = run_cli("score", "--date", "2026-01-01", "--input-root", str(tmp_path / "in"),
                     "--registry", registry_copy, "--model", "demo", "--output-dir", str(out),
                     "--db", f"sqlite:///{tmp_path / 'db.sqlite'}")
    assert result.rc == 1
    assert "aliases.json" in result.err and "invalid model version" in result.err
    assert not out.exists() or not any(out.rglob("*.parquet"))
