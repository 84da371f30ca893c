"""The Flex Template entry: template parameters in, ``beamscore score`` out."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from landing.samples import make_docs, write_tranche
from pipelines.orchestration.exit_codes import EXIT_OK
from pipelines.template import main, to_score_argv


def test_parameters_become_score_flags_and_the_rest_goes_to_beam() -> None:
    argv = to_score_argv(["--date=2026-11-30", "--input_root=gs://landing/docs",
                          "--sink_max_rows_per_second=2000", "--fields_metadata=source",
                          "--project=acme", "--temp_location=gs://t/tmp",
                          "--template_location=gs://t/launch/job.json"])
    assert argv == ["--date=2026-11-30", "--input-root=gs://landing/docs",
                    "--sink-max-rows-per-second=2000", "--fields-metadata=source",
                    "--project=acme", "--temp_location=gs://t/tmp",
                    "--template_location=gs://t/launch/job.json", "--config=dataflow"]


@pytest.mark.parametrize("value, forced", [("true", True), ("True", True), ("1", True),
                                           ("", True), ("false", False), ("0", False)])
def test_force_is_a_boolean_parameter(value: str, forced: bool) -> None:
    argv = to_score_argv([f"--force={value}" if value else "--force"])
    assert ("--force" in argv) is forced


def test_a_config_parameter_replaces_the_dataflow_overlay() -> None:
    assert to_score_argv(["--config=/etc/beamscore/prod.yaml"]) == [
        "--config=/etc/beamscore/prod.yaml"]


def test_the_entry_scores_from_flags_only(registry_root: str, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """What the launcher runs, on the local engine: ``--name=value`` pairs only."""
    root = tmp_path / "landing"
    write_tranche(str(root), "2026-11-30", list(make_docs(80, seed=6, prefix="t")), "jsonl")
    db = tmp_path / "t.db"
    rc = main(["--config=local", "--date=2026-11-30", f"--input_root={root}",
               f"--registry={registry_root}", f"--db=sqlite:///{db}",
               f"--output_dir={tmp_path / 'out'}", "--force=false", "--model=demo:1"])
    assert rc == EXIT_OK
    assert "2026-11-30          80        80        80       0        80  ok" in \
        capsys.readouterr().out
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM predictions").fetchone() == (80,)
