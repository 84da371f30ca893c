"""The config schema is the one declaration of every key: flags, configs/base.yaml,
docs/configuration.md and the sink's settings all follow it."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

import pytest

from pipelines.configuration.config import KEYS, SECTIONS, Config, load_config, settings_of
from pipelines.configuration.flags import add_config_flags, overrides_from_args
from pipelines.configuration.reference import reference
from pipelines.orchestration.finish import FinishSettings
from pipelines.orchestration.graph import GraphSettings
from pipelines.orchestration.launch import check_launch
from pipelines.orchestration.options import RunnerSettings
from pipelines.orchestration.plan import PlanSettings
from pipelines.orchestration.score import score_parser
from store.session import DatabaseSettings
from store.settings import SinkConfig
from tests.data import bundled_config, flat_keys

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("key", KEYS, ids=lambda k: k.name)
def test_every_key_has_one_line_of_help(key: Any) -> None:
    assert key.help.strip(), f"config key '{key.name}' has no help in its field metadata"
    assert "\n" not in key.help and len(key.help) <= 120, key.name


def test_every_section_has_a_description() -> None:
    assert [s.name for s in SECTIONS] == ["fields", "validation", "preprocessing", "inference",
                                          "read", "sink", "tracking", "schedule", "dataflow"]
    assert all(s.help for s in SECTIONS)


def test_keys_are_the_config_s_leaves_in_order() -> None:
    flat = flat_keys(Config().to_dict())
    assert [k.name for k in KEYS] == list(flat)
    assert {k.name: k.default for k in KEYS} == flat


def test_the_sink_section_is_the_store_s_settings_class() -> None:
    [sink] = [f for f in dataclasses.fields(Config) if f.name == "sink"]
    assert sink.type in (SinkConfig, "SinkConfig")
    assert issubclass(DatabaseSettings, SinkConfig)
    assert {k.name for k in KEYS if k.section == "sink"} == {
        f"sink.{f.name}" for f in dataclasses.fields(SinkConfig)}


def test_database_settings_carry_every_sink_key() -> None:
    cfg = load_config(None, {"sink.max_retries": "3", "sink.state_dir": "/tmp/limits",
                             "sink.batch_rows": "7", "sink.max_connections": "2"})
    settings = cfg.database
    assert settings.url == cfg.db
    for f in dataclasses.fields(SinkConfig):
        assert getattr(settings, f.name) == getattr(cfg.sink, f.name), f.name
    sink = check_launch(cfg, [])
    assert sink.database == settings
    assert (sink.batch_rows, sink.batch_bytes, sink.max_rows_per_second) == (
        7, cfg.sink.batch_bytes, cfg.sink.max_rows_per_second)
    assert sink.payload_limit == cfg.validation.max_payload_chars
    assert sink.progress_seconds == cfg.progress_seconds


@pytest.mark.parametrize("cls", [FinishSettings, GraphSettings, PlanSettings, RunnerSettings])
def test_a_step_s_settings_are_the_config_s_keys_and_sections_of_their_names(
        cls: type) -> None:
    cfg = load_config(None, {"workers": "3", "validation.max_text_chars": "9"})
    settings = settings_of(cls, cfg)
    for f in dataclasses.fields(cls):
        assert getattr(settings, f.name) == getattr(cfg, f.name), f.name


def test_database_settings_take_a_url_and_any_sink_key() -> None:
    s = DatabaseSettings("sqlite:///x.db", max_connections=1)
    assert (s.url, s.max_connections, s.max_retries) == ("sqlite:///x.db", 1,
                                                         SinkConfig().max_retries)


def _groups(parser: argparse.ArgumentParser) -> dict[str, list[str]]:
    return {g.title or "": [a.option_strings[0] for a in g._group_actions]
            for g in parser._action_groups}


def test_flags_are_grouped_by_section_with_one_help_line_each() -> None:
    parser = argparse.ArgumentParser()
    add_config_flags(parser)
    groups = _groups(parser)
    assert groups["configuration"][0] == "--config"
    for key in KEYS:
        title = key.section or "configuration"
        assert key.flag in groups[title], (key.name, title)
    assert "--sink-max-rows-per-second" in groups["sink"]
    assert "--tracking-psi" in groups["tracking"]
    helps = {a.option_strings[0]: a.help for a in parser._actions}
    for key in KEYS:
        assert helps[key.flag] == f"{key.help} [{key.name}]"


def test_score_help_shows_the_section_headings() -> None:
    text = score_parser().format_help()
    for title in ["configuration:", "sink:", "tracking:", "inference:", "dataflow:"]:
        assert f"\n{title}\n" in text, title


def test_flags_given_become_overrides_of_their_keys() -> None:
    parser = argparse.ArgumentParser()
    add_config_flags(parser, skip={"force"})
    args = parser.parse_args(["--sink-batch-rows", "9", "--tracking-psi=0.3"])
    assert overrides_from_args(args) == {"sink.batch_rows": "9", "tracking.psi": "0.3"}
    with pytest.raises(SystemExit):
        parser.parse_args(["--force"])


def test_reference_page_is_generated_from_the_schema() -> None:
    """Regenerate: python -m pipelines.configuration.reference > docs/configuration.md"""
    page = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert page == reference()


def test_reference_page_lists_every_key_with_flag_default_and_parameter() -> None:
    page = reference()
    for key in KEYS:
        [row] = [line for line in page.splitlines() if line.startswith(f"| `{key.name}` |")]
        cells = [c.strip() for c in row.split(" | ")]
        assert cells[1] == f"`{key.flag}`"
        assert cells[4] == (f"`{key.parameter}`" if key.template else "-"), key.name
    assert "| `sink.batch_rows` | `--sink-batch-rows` | int | `5000` | `sink_batch_rows` |" \
        in page
    assert "| `workers` | `--workers` | int | `1` | - |" in page


def test_base_yaml_sets_only_values_that_differ_from_the_defaults() -> None:
    defaults = {k.name: k.default for k in KEYS}
    base = flat_keys(bundled_config("base"))
    same = {k for k, v in base.items() if defaults[k] == v}
    assert not same, f"configs/base.yaml repeats defaults: {sorted(same)}"


@pytest.mark.parametrize("name", ["base", "local"])
def test_no_model_is_configured_for_the_local_environment(name: str) -> None:
    assert "model" not in bundled_config(name)



def test_every_number_declares_its_range_and_every_default_is_in_it() -> None:
    for key in KEYS:
        if key.type in (int, float):
            assert key.min is not None or key.above is not None, key.name
        assert key.problem(key.default) is None, (key.name, key.default)
