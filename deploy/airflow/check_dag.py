"""Checks beamscore_dag.py in a real Airflow; run by test.sh in Airflow's own virtualenv.

test.sh sets AIRFLOW_HOME (scratch, database migrated, the DAG serialized) and
AIRFLOW__CORE__DAGS_FOLDER (this folder). ``--beamscore`` is the repository's
``beamscore`` command and ``--repo-python`` its interpreter: the local-mode runs score
sample tranches with them for real. Every check prints one ``ok`` line; the first
failure stops with a traceback.
"""

from __future__ import annotations

import argparse
import ast
import datetime as dt
import inspect
import json
import logging
import os
import re
import shlex
import sqlite3
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
DAG_ID = "beamscore_nightly"
LOGICAL = "2026-11-30T03:30:00+00:00"  # scheduled to run at 2026-12-01 03:30 UTC

# Every Variable set, and the connection with a password that needs quoting in a URL.
VARIABLES = {
    "mode": "local",
    "project": "acme-prod",
    "region": "us-central1",
    "template": "gs://acme-templates/beamscore/beamscore.json",
    "temp_location": "gs://acme-temp/beamscore/tmp",
    "staging_location": "gs://acme-temp/beamscore/staging",
    "service_account": "scorer@acme-prod.iam.gserviceaccount.com",
    "input_root": "gs://acme-landing/documents",
    "output_dir": "gs://acme-scores/beamscore",
    "registry": "gs://acme-models/registry",
    "db": "postgresql://scorer@db.internal:5432/scores",
    "model": "tickets:production",
    "beamscore": "/opt/beamscore/bin/beamscore",
    "config": "/etc/beamscore/one machine.yaml",
}
CONNECTION = "postgresql://scorer:p%40ss%20word@db.internal:5432/scores"
PASSWORD = "p@ss word"
QUIET_LOG = Path(os.environ.get("AIRFLOW_HOME", tempfile.gettempdir())) / "quiet.log"
STARTED = time.monotonic()


def ok(what: str) -> None:
    print(f"ok  {time.monotonic() - STARTED:5.1f}s  {what}", flush=True)


@contextmanager
def quiet() -> Iterator[None]:
    """Airflow's task output (states, tracebacks of the failures expected here) goes to
    QUIET_LOG, whose tail ``main`` prints when a check fails."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with QUIET_LOG.open("a") as out:
        os.dup2(out.fileno(), 1)
        os.dup2(out.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def variables_env(values: dict[str, str], connection: str | None = None) -> dict[str, str]:
    """os.environ without beamscore Variables or connections, plus these (Airflow's
    environment-variable secrets backend)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AIRFLOW_VAR_BEAMSCORE_", "AIRFLOW_CONN_BEAMSCORE_"))}
    env |= {f"AIRFLOW_VAR_BEAMSCORE_{k.upper()}": v for k, v in values.items()}
    if connection is not None:
        env["AIRFLOW_CONN_BEAMSCORE_DB"] = connection
    return env


def load_dag() -> Any:
    try:
        from airflow.dag_processing.dagbag import DagBag  # Airflow 3
    except ImportError:
        from airflow.models.dagbag import DagBag  # Airflow 2
    kwargs = {}
    if "include_examples" in inspect.signature(DagBag).parameters:  # gone in Airflow 3
        kwargs["include_examples"] = False
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bag = DagBag(dag_folder=str(HERE), **kwargs)
    assert not bag.import_errors, bag.import_errors
    assert set(bag.dags) == {DAG_ID}, sorted(bag.dags)
    parsed = {Path(f).name for f in bag.file_last_changed}
    assert parsed == {"beamscore_dag.py"}, parsed  # .airflowignore keeps this file out
    ours = [str(w.message) for w in caught if Path(w.filename).name == "beamscore_dag.py"]
    assert not ours, ours
    ok(f"DagBag({HERE}): no import errors, no warnings from the DAG file, one DAG {DAG_ID}")
    return bag.dags[DAG_ID]


def check_structure(dag: Any) -> Any:
    from airflow.providers.google.cloud.operators.dataflow import (
        DataflowStartFlexTemplateOperator,
    )
    from airflow.timetables.interval import CronDataIntervalTimetable

    try:
        from airflow.providers.standard.operators.bash import BashOperator
        from airflow.providers.standard.operators.python import BranchPythonOperator
    except ImportError:
        from airflow.operators.bash import BashOperator
        from airflow.operators.python import BranchPythonOperator

    tasks = {t.task_id: t for t in dag.tasks}
    assert sorted(tasks) == ["choose_mode", "score_dataflow", "score_local"], sorted(tasks)
    assert isinstance(tasks["choose_mode"], BranchPythonOperator)
    assert isinstance(tasks["score_dataflow"], DataflowStartFlexTemplateOperator)
    assert isinstance(tasks["score_local"], BashOperator)
    assert type(tasks["score_local"]).__name__ == "BeamscoreBashOperator"
    assert tasks["choose_mode"].downstream_task_ids == {"score_dataflow", "score_local"}
    ok("tasks: choose_mode (BranchPythonOperator) >> [score_dataflow "
       "(DataflowStartFlexTemplateOperator), score_local (BeamscoreBashOperator(BashOperator))]")

    assert dag.catchup is False and dag.max_active_runs == 1
    assert isinstance(dag.timetable, CronDataIntervalTimetable), dag.timetable
    import pendulum

    run_at = pendulum.datetime(2026, 12, 1, 3, 30, tz="UTC")
    interval = dag.timetable.infer_manual_data_interval(run_after=run_at)
    assert interval.start == pendulum.datetime(2026, 11, 30, 3, 30, tz="UTC"), interval
    assert interval.end == run_at, interval
    ok("schedule: 03:30 UTC daily, catchup off, one run at a time; the run at 2026-12-01 "
       "03:30 has logical date 2026-11-30 ({{ ds }} = the day before)")

    for name in ("score_dataflow", "score_local"):
        t = tasks[name]
        assert t.retries == 4 and t.retry_delay == dt.timedelta(minutes=30), name
        assert t.on_failure_callback, name
        assert t.execution_timeout == dt.timedelta(hours=6), name
    assert tasks["choose_mode"].retries == 0
    assert tasks["score_dataflow"].wait_until_finished is True
    assert tasks["score_local"].append_env is True
    ok("score tasks: 4 retries 30 min apart, 6 h timeout, failure callback; Dataflow "
       "waits for the job; the local task keeps the worker's environment")
    module = sys.modules[type(tasks["score_local"]).__module__]
    assert set(VARIABLES) == set(module.DEFAULTS), set(VARIABLES) ^ set(module.DEFAULTS)
    return module


def check_exit_codes(module: Any) -> None:
    try:
        from airflow.sdk.exceptions import AirflowException, AirflowFailException
    except ImportError:
        from airflow.exceptions import AirflowException, AirflowFailException

    retry, fail = AirflowException, AirflowFailException
    expected = {0: None, 1: fail, 2: fail, 3: retry, 4: fail, 5: retry, 6: fail, 130: retry,
                143: retry, 137: retry}
    for code, kind in expected.items():
        exc = module.exit_code_exception(code)
        assert (type(exc) if exc is not None else None) is kind, (code, exc)
    ok("exit_code_exception: 0 -> success; 1, 2, 4, 6 -> AirflowFailException (no retry); "
       "3, 5, 130, 143 and unknown (137) -> AirflowException (retried)")

    # The same through the operator, with real processes exiting with each code.
    def raised(command: str) -> type | None:
        op = module.BeamscoreBashOperator(task_id="exit", bash_command=command,
                                          skip_on_exit_code=None)
        try:
            with quiet():  # "execute cannot be called outside of the Task Runner!"
                op.execute({})
        except AirflowException as exc:
            return type(exc)
        return None

    for code, kind in expected.items():
        assert raised(f"exit {code}") is kind, code
    assert raised("kill -TERM $$") is retry  # no handler: the shell dies of the signal
    ok("BeamscoreBashOperator.execute on real processes exiting 0 1 2 3 4 5 6 130 143 137, "
       "and one killed by SIGTERM (retried): the same exceptions")


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
    check_template_parameters([default_parameters, got["body"]["launchParameter"]["parameters"]],
                              repo_python)


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
              "pipelines.template.options()", flush=True)
        return
    code = ("import json; from pipelines.template import HIDDEN, options; "
            "print(json.dumps(sorted(set(options()) - set(HIDDEN))))")
    out = subprocess.run([str(repo_python), "-c", code], cwd=REPO, capture_output=True,
                         text=True, check=True)
    offered = set(json.loads(out.stdout))
    assert passed <= offered, passed - offered
    ok("Flex Template parameters are options of pipelines.template (none of HIDDEN)")


class Alerts(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def check_local_runs(dag: Any, beamscore: Path, repo_python: Path) -> None:
    """``dag.test()`` in local mode: the real beamscore on sample tranches."""
    data = Path(tempfile.mkdtemp(prefix="data-", dir=os.environ.get("AIRFLOW_HOME")))
    for command in ([str(repo_python), "-m", "landing.samples", "--root", str(data)],
                    [str(beamscore), "train", "--docs", str(data / "train" / "*.jsonl"),
                     "--name", "demo", "--registry", str(data / "registry")]):
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
        assert done.returncode == 0, (command, done.stderr[-3000:])
    ok(f"sample tranches 2026-01-01..03 and model demo:1 in {data}")
    strict = data / "strict.yaml"
    strict.write_text("max_dead_letter_ratio: 0.001\n")  # the samples have 0.5% dead letters
    db = data / "beamscore.db"
    base = {"mode": "local", "beamscore": str(beamscore), "config": "local",
            "input_root": str(data / "landing"), "output_dir": str(data / "output"),
            "registry": str(data / "registry"), "db": f"sqlite:///{db}", "model": "demo"}
    try:  # Airflow 2: dag_run_note refers to FAB's ab_user table, known once imported
        import airflow.providers.fab.auth_manager.models  # noqa: F401
    except ImportError:
        pass
    date_arg = ("logical_date" if "logical_date" in inspect.signature(dag.test).parameters
                else "execution_date")  # Airflow 2
    task = dag.get_task("score_local")
    task.retries, task.retry_delay = 1, dt.timedelta(0)  # one immediate retry, to see it
    alerts = Alerts()
    logging.getLogger(DAG_ID).addHandler(alerts)

    def run(day: str, **changed: str) -> tuple[str, int]:
        os.environ.clear()
        os.environ.update(variables_env(base | changed))
        when = {date_arg: dt.datetime.fromisoformat(f"{day}T03:30:00+00:00")}
        with quiet():
            dr = dag.test(**when)
        states = {ti.task_id: (str(ti.state).split(".")[-1].lower(), ti.try_number)
                  for ti in dr.get_task_instances()}
        assert states["choose_mode"][0] == "success", states
        assert states["score_dataflow"][0] == "skipped", states
        return states["score_local"]

    def rows() -> int:
        with sqlite3.connect(db) as con:
            return int(con.execute("SELECT count(*) FROM predictions").fetchone()[0])

    saved = dict(os.environ)
    try:
        assert run("2026-01-01") == ("success", 1)
        assert rows() == 3000, rows()
        ok("dag.test 2026-01-01, mode local: beamscore exit 0, task success, 3000 rows; "
           "score_dataflow skipped")
        assert run("2026-01-01") == ("success", 1) and rows() == 3000
        ok("dag.test 2026-01-01 again: the ledger skips the tranche, exit 0, no new rows")
        assert run("2026-01-09") == ("failed", 2)
        ok("dag.test 2026-01-09 (no tranche): exit 3, retried (try 2), then failed")
        assert run("2026-01-02", config=str(strict)) == ("failed", 1)
        ok("dag.test 2026-01-02 with max_dead_letter_ratio 0.001: exit 4, failed on "
           "try 1, no retry")
        assert run("2026-01-03", model="nosuch") == ("failed", 1)
        ok("dag.test 2026-01-03 with model nosuch: exit 1, failed on try 1, no retry")
    finally:
        os.environ.clear()
        os.environ.update(saved)
    failed = [line for line in alerts.lines if line.startswith("ALERT")]
    assert len(failed) == 3, alerts.lines
    ok("on_failure_callback called once per failed task: " + " | ".join(failed)[:300])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--beamscore", type=Path, help="the repository's beamscore command")
    ap.add_argument("--repo-python", type=Path, help="the repository's python")
    args = ap.parse_args()
    import airflow

    print(f"Airflow {airflow.__version__}, Python {sys.version.split()[0]}", flush=True)
    try:
        dag = load_dag()
        check_exit_codes(check_structure(dag))
        check_rendering(args.repo_python)
        if args.beamscore and args.repo_python:
            check_local_runs(dag, args.beamscore, args.repo_python)
        else:
            print("--  no --beamscore/--repo-python: local-mode runs not checked", flush=True)
    except BaseException:
        if QUIET_LOG.exists():
            tail = QUIET_LOG.read_text().splitlines()[-60:]
            print(f"FAILED; the last lines of {QUIET_LOG}:", *tail, sep="\n", flush=True)
        raise
    print("all checks passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
