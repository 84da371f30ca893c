"""``airflow tasks render`` of every task, with no Variables and with all of them set:
the commands and the Flex Template launch a scheduler would run, checked against
metadata.json and ``pipelines.template``."""

from __future__ import annotations

import ast
import json
import re
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from checks import CONNECTION, DAG_ID, LOGICAL, PASSWORD, REPO, VARIABLES, ok, variables_env


def render(task_id: str, env: dict[str, str]) -> dict[str, Any]:
    """``airflow tasks render`` of ``task_id`` at LOGICAL: property name -> value."""
    out = subprocess.run(
        [str(Path(sys.executable).with_name("airflow")), "tasks", "render", DAG_ID, task_id,
         LOGICAL], env=env, capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    parts = re.split(r"^# -+\n# property: (\w+)\n# -+\n", out.stdout, flags=re.M)
    values: dict[str, Any] = {}
    for name, text in zip(parts[1::2], parts[2::2]):
        text = text.rstrip("\n")
        try:
            values[name] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            values[name] = text
    return values


def check_rendering(repo_python: Path | None) -> None:
    envs = {"defaults": variables_env({}), "set": variables_env(VARIABLES, CONNECTION)}
    jobs = [(task, which) for which in envs
            for task in ("score_local", "score_dataflow", "choose_mode")]
    with ThreadPoolExecutor(max_workers=3) as pool:  # each is an `airflow` process of ~5 s
        renders = dict(zip(jobs, pool.map(lambda job: render(job[0], envs[job[1]]), jobs)))
    ok("airflow tasks render: 3 tasks x (no Variables, every Variable and the connection)")
    defaults = _check_defaults(renders)
    configured = _check_every_variable_set(renders)
    check_template_parameters([defaults, configured], repo_python)


def _check_defaults(renders: dict[tuple[str, str], dict[str, Any]]) -> dict[str, str]:
    """With no Variable set: the example- placeholders; returns the template parameters."""
    got = renders["score_local", "defaults"]
    assert got["bash_command"] == (
        "beamscore score --date 2026-11-30 --config /etc/beamscore/production.yaml "
        "--input-root gs://example-landing/documents --output-dir gs://example-scores/beamscore "
        "--registry gs://example-models/registry "
        "--db postgresql://beamscore@10.0.0.5:5432/scores --model demo"), got["bash_command"]
    assert got["env"] == {"PGPASSWORD": ""}, got["env"]
    ok("render score_local, no Variables: " + got["bash_command"] + "; PGPASSWORD empty "
       "(no connection beamscore_db)")

    got = renders["score_dataflow", "defaults"]
    launch = got["body"]["launchParameter"]
    default_parameters = launch["parameters"]
    assert got["project_id"] == "example-project" and got["location"] == "europe-west1"
    assert launch["containerSpecGcsPath"] == \
        "gs://example-temp/beamscore/templates/beamscore.json", launch
    assert launch["parameters"]["date"] == "2026-11-30", launch
    ok("render score_dataflow, no Variables: the example- placeholders, date 2026-11-30")

    mode = renders["choose_mode", "defaults"]["op_kwargs"]
    assert mode == {"mode": "dataflow"}, mode
    ok("render choose_mode, no Variables: mode dataflow")
    return default_parameters


def _check_every_variable_set(renders: dict[tuple[str, str], dict[str, Any]]
                              ) -> dict[str, str]:
    """With every Variable and the connection set; returns the template parameters."""
    got = renders["score_local", "set"]
    v = VARIABLES
    command = (f"{v['beamscore']} score --date 2026-11-30 --config {shlex.quote(v['config'])} "
               f"--input-root {v['input_root']} --output-dir {v['output_dir']} "
               f"--registry {v['registry']} --db {v['db']} --model {v['model']}")
    assert got["bash_command"] == command, got["bash_command"]
    assert got["env"] == {"PGPASSWORD": PASSWORD}, "password not from the connection"
    assert PASSWORD not in got["bash_command"]
    ok("render score_local, every Variable set: " + command + "; PGPASSWORD = the "
       "password of connection beamscore_db, only in the environment")

    got = renders["score_dataflow", "set"]
    expected_body = {"launchParameter": {
        "jobName": "beamscore-20261130",
        "containerSpecGcsPath": v["template"],
        "parameters": {"date": "2026-11-30", "input_root": v["input_root"],
                       "output_dir": v["output_dir"], "registry": v["registry"],
                       "db": v["db"], "model": v["model"]},
        "environment": {"tempLocation": v["temp_location"],
                        "stagingLocation": v["staging_location"],
                        "serviceAccountEmail": v["service_account"]}}}
    assert got["body"] == expected_body, got["body"]
    assert got["project_id"] == v["project"] and got["location"] == v["region"], got
    assert PASSWORD not in json.dumps(got["body"])
    ok("render score_dataflow, every Variable set: " + json.dumps(expected_body))
    assert renders["choose_mode", "set"]["op_kwargs"] == {"mode": "local"}
    ok("render choose_mode, beamscore_mode=local: mode local")
    return dict(got["body"]["launchParameter"]["parameters"])


def check_template_parameters(rendered: list[dict[str, str]], repo_python: Path | None) -> None:
    """The parameters passed are the template's: declared in metadata.json when it exists
    (its required ones all passed, every rendered value matching its regexes, as Dataflow
    checks at launch), and options of ``pipelines.template`` that it does not hide."""
    passed = set(rendered[0])
    metadata = REPO / "deploy" / "flex-template" / "metadata.json"
    if metadata.exists():
        params = {p["name"]: p for p in json.loads(metadata.read_text())["parameters"]}
        required = {n for n, p in params.items() if not p.get("isOptional", False)}
        assert passed <= set(params), passed - set(params)
        assert required <= passed, required - passed
        for values in rendered:
            for name, value in values.items():
                for regex in params[name].get("regexes", []):
                    assert re.fullmatch(regex, value), (name, value, regex)
        ok(f"Flex Template parameters {sorted(passed)} are declared in {metadata.name} "
           f"(required: {sorted(required) or 'none'}) and the rendered values match its regexes")
    else:
        print(f"--  {metadata} does not exist: parameters not checked against it", flush=True)
    if repo_python is None:
        print("--  no repository interpreter: parameters not checked against "
              "pipelines.template_metadata.parameters()", flush=True)
        return
    code = ("import json; from pipelines.template_metadata import parameters; "
            "print(json.dumps(sorted(p.name for p in parameters())))")
    out = subprocess.run([str(repo_python), "-c", code], cwd=REPO, capture_output=True,
                         text=True, check=True)
    offered = set(json.loads(out.stdout))
    assert passed <= offered, passed - offered
    ok("Flex Template parameters are parameters of pipelines.template (none hidden)")
