"""Checks beamscore_dag.py in a real Airflow; run by test.sh in Airflow's own virtualenv.

test.sh sets AIRFLOW_HOME (scratch, database migrated, the DAG serialized) and
AIRFLOW__CORE__DAGS_FOLDER (this folder). ``--beamscore`` is the repository's
``beamscore`` command and ``--repo-python`` its interpreter: the local-mode runs score
sample tranches with them for real. Every check prints one ``ok`` line; the first
failure stops with a traceback.
"""

from __future__ import annotations

import argparse
import datetime as dt
import inspect
import sys
import warnings
from pathlib import Path
from typing import Any

from check_render import check_rendering
from check_runs import check_local_runs
from checks import DAG_ID, HERE, QUIET_LOG, VARIABLES, ok, quiet


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
    expected = {0: None, 1: fail, 2: fail, 3: retry, 4: fail, 5: retry, 6: fail, 75: retry,
                130: retry, 143: retry, 137: retry}
    for code, kind in expected.items():
        exc = module.exit_code_exception(code)
        assert (type(exc) if exc is not None else None) is kind, (code, exc)
    ok("exit_code_exception: 0 -> success; 1, 2, 4, 6 -> AirflowFailException (no retry); "
       "3, 5, 75, 130, 143 and unknown (137) -> AirflowException (retried)")

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
    ok("BeamscoreBashOperator.execute on real processes exiting 0 1 2 3 4 5 6 75 130 143 137, "
       "and one killed by SIGTERM (retried): the same exceptions")


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
