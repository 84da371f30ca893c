"""deploy/flex-template/metadata.json, the Dockerfile and the docs stay in
sync with the Flex Template entry (pipelines/template.py), the config schema and
setup.py."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pipelines import template, template_metadata
from pipelines.configuration.config import KEYS
from pipelines.orchestration.options import unknown_beam_args
from pipelines.orchestration.score import score_parser

REPO = Path(__file__).resolve().parents[2]
METADATA = REPO / "deploy" / "flex-template" / "metadata.json"
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

# The documented Flex Template metadata fields (Dataflow's TemplateMetadata and
# ParameterMetadata, dataflow v1b3).
TOP_KEYS = {"name", "description", "parameters", "streaming", "supportsAtLeastOnce",
            "supportsExactlyOnce", "defaultStreamingMode"}
PARAM_KEYS = {"name", "label", "helpText", "isOptional", "regexes", "paramType",
              "customMetadata", "parentName", "parentTriggerValues", "enumOptions",
              "defaultValue", "hiddenUi", "groupName"}

# Example values of each parameter: the docs' gcloud examples use exactly these
# (checked below), and each parameter's regexes accept them; BAD is rejected.
EXAMPLES: dict[str, list[str]] = {
    "date": ["2026-11-30"],
    "from": ["2026-11-01"],
    "to": ["2026-11-07"],
    "force": ["true", "false"],
    "allow_empty_tranches": ["true", "false"],
    "config": ["dataflow", "/template/configs/dataflow.yaml"],
    "input_root": ["gs://acme-landing/documents"],
    "output_dir": ["gs://acme-scores/beamscore"],
    "registry": ["gs://acme-models/registry"],
    "db": ["postgresql://beamscore@10.20.0.5:5432/scores"],
    "model": ["tickets:production", "demo", "demo:3"],
    "batch_size": ["4096"],
    "max_dead_letter_ratio": ["0.05", "0", "1"],
    "fields_id": ["id"],
    "fields_text": ["body"],
    "fields_label": ["label"],
    "fields_metadata": ["source,lang", "source"],
    "validation_max_text_chars": ["100000"],
    "inference_top_k": ["3"],
    "inference_timeout_seconds": ["30", "0"],
    "inference_timeout_ms_per_record": ["5", "2.5"],
    "inference_trusted_types": ["mypkg.MyModel", "mypkg.MyModel,mypkg.sub.Other"],
    "sink_batch_rows": ["5000"],
    "sink_max_rows_per_second": ["20000", "0"],
    "sink_max_connections": ["8"],
    "sink_password_env": ["BEAMSCORE_DB_PASSWORD", "PGPASSWORD"],
    "sink_redis_url": ["redis://10.20.0.7:6379/0"],
    "schedule_timezone": ["Europe/Berlin", "UTC", "America/Argentina/Buenos_Aires"],
}
BAD: dict[str, str] = {
    "date": "2026-11-3",
    "from": "yesterday",
    "to": "30.11.2026",
    "force": "yes",
    "allow_empty_tranches": "no",
    "config": "local",
    "input_root": "var/landing",
    "output_dir": "s3://acme-scores/beamscore",
    "registry": "gs://",
    "db": "postgresql://beamscore:secret@10.20.0.5:5432/scores",
    "model": "demo:",
    "batch_size": "0",
    "max_dead_letter_ratio": "1.5",
    "fields_id": "document id",
    "fields_text": "",
    "fields_label": "label,",
    "fields_metadata": "source,,lang",
    "validation_max_text_chars": "-1",
    "inference_top_k": "three",
    "inference_timeout_seconds": "-1",
    "inference_timeout_ms_per_record": "5ms",
    "inference_trusted_types": "MyModel",
    "sink_batch_rows": "5e3",
    "sink_max_rows_per_second": "unlimited",
    "sink_max_connections": "08",
    "sink_password_env": "DB-PASSWORD",
    "sink_redis_url": "redis://:secret@10.20.0.7:6379/0",
    "schedule_timezone": "+01:00",
}
# Beam options a gcloud example may pass besides the template parameters.
BEAM_PARAMETERS = {"sdk_container_image"}


def metadata() -> dict[str, Any]:
    return json.loads(METADATA.read_text(encoding="utf-8"))


def parameters() -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in metadata()["parameters"]}


def argparse_help() -> dict[str, str]:
    out = {}
    for action in score_parser()._actions:
        for flag in action.option_strings:
            if flag.startswith("--") and flag != "--help":
                out[flag[2:].replace("-", "_")] = action.help or ""
    return out


def accepts(param: dict[str, Any], value: str) -> bool:
    return all(re.search(rx, value) for rx in param["regexes"])


def test_metadata_is_generated_from_the_schema() -> None:
    """Regenerate: python -m pipelines.template_metadata > deploy/flex-template/metadata.json"""
    assert METADATA.read_text(encoding="utf-8") == template_metadata.metadata_json()


def test_parameters_are_the_options_not_hidden() -> None:
    names = [p["name"] for p in metadata()["parameters"]]
    options = set(template.options())
    hidden = template_metadata.hidden()
    assert len(names) == len(set(names)), "a parameter is listed twice"
    assert set(names) <= options, f"not options of the entry: {set(names) - options}"
    assert not set(names) & hidden, "both a parameter and hidden"
    assert options == set(names) | hidden, (
        f"options neither a parameter nor hidden: {options - set(names) - hidden}")
    assert hidden <= options, "hidden names an option that does not exist"


def test_hidden_options_are_the_keys_the_schema_hides() -> None:
    assert template_metadata.hidden() == {k.parameter for k in KEYS if not k.template}
    # operational tuning, unsafe switches, the local engine and Dataflow's own options
    assert {"workers", "runner", "sink_state_dir", "inference_allow_pickle",
            "dataflow_project", "tracking_psi", "preprocessing_lowercase"} <= \
        template_metadata.hidden()


def test_parameter_fields() -> None:
    helps = argparse_help()
    for name, param in parameters().items():
        assert param["label"].strip(), name
        assert param["isOptional"] is True, name
        # the flag's own help, then at most a note of the template's
        assert param["helpText"].startswith(helps[name]), (name, param["helpText"])
        assert len(param["regexes"]) == 1, name
        rx = param["regexes"][0]
        assert rx.startswith("^") and rx.endswith("$"), (name, rx)
        re.compile(rx)


def test_only_documented_keys() -> None:
    meta = metadata()
    assert set(meta) <= TOP_KEYS, set(meta) - TOP_KEYS
    assert meta["name"] and meta["description"]
    assert meta.get("streaming") in (None, False)
    for param in meta["parameters"]:
        assert set(param) <= PARAM_KEYS, (param["name"], set(param) - PARAM_KEYS)
        assert {"name", "label", "helpText"} <= set(param), param["name"]


def test_every_parameter_has_examples_and_a_bad_value() -> None:
    assert set(EXAMPLES) == set(parameters()) == set(BAD)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_regexes_accept_the_examples_and_reject_a_bad_value(name: str) -> None:
    param = parameters()[name]
    for value in EXAMPLES[name]:
        assert accepts(param, value), (name, value, param["regexes"])
    assert not accepts(param, BAD[name]), (name, BAD[name], param["regexes"])


def documented_parameters() -> list[tuple[str, str, str]]:
    """(file, name, value) of every --parameters item in the docs' gcloud examples."""
    found = []
    for doc in DOCS:
        if not doc.exists():
            continue
        for arg in re.findall(r"--parameters[ =](\S+)", doc.read_text(encoding="utf-8")):
            arg = arg.strip("'\"`")
            sep = ","
            if arg.startswith("^"):
                sep, arg = arg[1:].split("^", 1)
            for item in arg.split(sep):
                name, _, value = item.partition("=")
                found.append((doc.name, name, value.strip("'\"")))
    return found


def test_the_docs_use_exactly_the_example_values() -> None:
    shown = documented_parameters()
    assert {n for _, n, _ in shown} >= {"date", "from", "to", "input_root", "db"}, shown
    params = parameters()
    for doc, name, value in shown:
        if name in BEAM_PARAMETERS:
            assert not unknown_beam_args([f"--{name}={value}"]), (doc, name)
            continue
        assert name in params, f"{doc}: {name} is not a template parameter"
        assert value in EXAMPLES[name], f"{doc}: {name}={value} is not in EXAMPLES"
        assert accepts(params[name], value), (doc, name, value)


def gcloud_build(metadata_file: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CLOUDSDK_CONFIG": str(tmp_path / "gcloud"),
           "CLOUDSDK_CORE_PROJECT": "beamscore-test", "CLOUDSDK_CORE_DISABLE_PROMPTS": "1"}
    return subprocess.run(
        ["gcloud", "dataflow", "flex-template", "build", "gs://b/t.json", "--image", "IMG",
         "--sdk-language", "PYTHON", "--metadata-file", str(metadata_file), "--print-only"],
        capture_output=True, text=True, env=env, timeout=120, check=False)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("gcloud") is None, reason="gcloud is not installed")
def test_gcloud_accepts_the_metadata_and_rejects_a_broken_copy(tmp_path: Path) -> None:
    done = gcloud_build(METADATA, tmp_path)
    assert done.returncode == 0, done.stderr
    spec = json.loads(done.stdout[done.stdout.index("{"):])
    assert spec["metadata"]["name"] == metadata()["name"]
    assert [p["name"] for p in spec["metadata"]["parameters"]] == list(parameters())

    broken = metadata()
    del broken["parameters"][0]["helpText"]
    bad_file = tmp_path / "broken.json"
    bad_file.write_text(json.dumps(broken), encoding="utf-8")
    done = gcloud_build(bad_file, tmp_path)
    assert done.returncode != 0
    assert "helpText" in done.stderr


def dockerfile() -> str:
    return (REPO / "Dockerfile").read_text(encoding="utf-8")


def test_dockerfile_beam_version_is_setup_py_s() -> None:
    setup = (REPO / "setup.py").read_text(encoding="utf-8")
    [beam] = re.findall(r'^BEAM_VERSION = "([^"]+)"$', setup, re.M)
    text = dockerfile()
    assert re.findall(r"^ARG BEAM_VERSION=(\S+)$", text, re.M) == [beam]
    assert re.findall(r"^ARG BEAM_SDK_IMAGE=apache/beam_python3\.11_sdk:(\S+)$", text,
                      re.M) == [beam]
    assert '"apache-beam[gcp]==${BEAM_VERSION}"' in text


def test_dockerfile_flex_template_settings() -> None:
    text = dockerfile()
    [workdir] = re.findall(r"^ARG WORKDIR=(\S+)$", text, re.M)
    [py_file] = re.findall(r"^ENV FLEX_TEMPLATE_PYTHON_PY_FILE=(\S+)$", text, re.M)
    py_file = py_file.replace("${WORKDIR}", workdir)
    assert py_file == f"{workdir}/pipelines/template.py"
    assert (REPO / py_file.removeprefix(workdir + "/")).is_file()
    assert re.search(r"^COPY \. \./$", text, re.M)  # the context .dockerignore leaves
    assert re.search(r'^ENTRYPOINT \["/opt/apache/beam/boot"\]$', text, re.M)
    assert "COPY --from=launcher /opt/google/dataflow/python_template_launcher " in text
    assert "RUN_PYTHON_SDK_IN_DEFAULT_ENVIRONMENT=1" in text
    assert "PYTHONSAFEPATH=1" in text  # see test_template_file_runs_as_the_launcher_runs_it
    assert "pip check" in text
    assert not re.search(r"(?i)^(ARG|ENV)\s+\S*(PASSWORD|SECRET|TOKEN)", text, re.M)


def test_dockerignore_keeps_the_packages_and_drops_the_rest() -> None:
    ignored = {line.strip() for line in
               (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
               if line.strip() and not line.startswith("#")}
    setup = (REPO / "setup.py").read_text(encoding="utf-8")
    [listed] = re.findall(r"packages=\[([^]]*)\]", setup)
    packages = set(re.findall(r'"([^"]+)"', listed))
    assert "pipelines" in packages
    assert not packages & ignored, packages & ignored
    assert {".venv", "var", "bench", ".git", "**/__pycache__", ".mypy_cache", ".ruff_cache",
            ".pytest_cache", ".hypothesis"} <= ignored


def python() -> str:
    venv = REPO / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


@pytest.mark.slow
def test_template_help_exits_0() -> None:
    done = subprocess.run([python(), "-m", "pipelines.template", "--help"], cwd=REPO,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    # the template's own parameter names, as the launcher passes them
    assert "input_root=" in done.stdout
    assert "date=YYYY-MM-DD" in done.stdout
    assert "--input-root" not in done.stdout


@pytest.mark.slow
def test_template_file_runs_as_the_launcher_runs_it() -> None:
    """The launcher runs ``python $FLEX_TEMPLATE_PYTHON_PY_FILE``: without PYTHONSAFEPATH
    (set in the Dockerfile) pipelines/ would come first on sys.path."""
    env = {**os.environ, "PYTHONSAFEPATH": "1"}
    done = subprocess.run([python(), str(REPO / "pipelines" / "template.py"), "--help"],
                          cwd="/", env=env, capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
