"""The Flex Template entry: template parameters in, ``beamscore score`` out."""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path

import pytest

from landing.samples import make_docs, write_tranche
from pipelines import template_metadata
from pipelines.configuration.config import load_config
from pipelines.configuration.flags import overrides_from_args
from pipelines.orchestration.exit_codes import EXIT_OK
from pipelines.orchestration.run_arguments import parse_score_args
from pipelines.template import main, to_score_argv
from pipelines.template_metadata import parameters


def test_parameters_become_score_flags_and_the_rest_goes_to_beam() -> None:
    argv = to_score_argv(["--date=2026-11-30", "--input_root=gs://landing/docs",
                          "--sink_max_rows_per_second=2000", "--fields_metadata=source",
                          "--project=acme", "--temp_location=gs://t/tmp",
                          "--template_location=gs://t/launch/job.json"])
    assert argv == ["--date=2026-11-30", "--input-root=gs://landing/docs",
                    "--sink-max-rows-per-second=2000", "--fields-metadata=source",
                    "--project=acme", "--temp_location=gs://t/tmp",
                    "--template_location=gs://t/launch/job.json", "--config=dataflow"]


@pytest.mark.parametrize("value, forced", [("true", True), ("True", True), ("", True),
                                           ("false", False), ("no", False)])
def test_force_is_a_boolean_parameter_that_overrides_the_configs(
        value: str, forced: bool, tmp_path: Path) -> None:
    """``force=false`` turns off an overlay's ``force: true`` (the parameter is passed
    on as the flag's value, read as every boolean flag is)."""
    overlay = tmp_path / "prod.yaml"
    overlay.write_text("force: true\n")
    argv = to_score_argv([f"--force={value}" if value else "--force",
                          f"--config={overlay}"])
    _, args, _ = parse_score_args(argv)
    assert load_config(args.config, overrides_from_args(args)).force is forced


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


def test_help_speaks_in_template_parameter_names(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    for param in parameters():
        assert f"\n  {param.name}={param.metavar}\n" in text, param.name
    assert "  input_root=TEXT\n" in text and "  date=YYYY-MM-DD\n" in text
    assert "--input-root" not in text and "--sink-batch-rows" not in text
    # the hidden options are named too, as what the config overlay sets
    assert "sink_state_dir" in text.split("not template parameters")[1]


def test_an_exposed_key_without_a_label_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    keys = [dataclasses.replace(k, label="") if k.name == "batch_size" else k
            for k in template_metadata.KEYS]
    monkeypatch.setattr(template_metadata, "KEYS", keys)
    with pytest.raises(ValueError, match="'batch_size'.*label"):
        template_metadata.parameters()
