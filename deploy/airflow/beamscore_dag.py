"""Airflow DAG ``beamscore_nightly``: each night, score the previous day's tranche.

The run for logical date D starts at 03:30 UTC on D + 1 and scores tranche D
(``{{ ds }}``). ``choose_mode`` follows the Airflow Variable ``beamscore_mode``:

- ``dataflow`` (default): ``score_dataflow`` launches the Flex Template
  (``DataflowStartFlexTemplateOperator``) and waits for the job to finish.
- ``local``: ``score_local`` runs ``beamscore score --date {{ ds }} ...`` on the Airflow
  worker, and beamscore's exit code decides what Airflow does (``exit_code_exception``):
  3, 5, 75, 130 and 143 are retried later; 1, 2, 4 and 6 fail at once, without retries
  (6: the scores are written and tracking requested retraining: a person decides).

Each setting is the Airflow Variable ``beamscore_<name>`` (``DEFAULTS`` below when it is
not set), read when the task runs, not when the file is parsed. The ``example-``
defaults are placeholders that beamscore refuses at launch. The database password comes
from the password of the Airflow connection ``beamscore_db`` and reaches beamscore only
in its environment (``PGPASSWORD``, beamscore's default ``sink.password_env``).
"""

from __future__ import annotations

import datetime as dt
import logging
import shlex
from typing import Any

from airflow.providers.google.cloud.operators.dataflow import DataflowStartFlexTemplateOperator
from airflow.timetables.interval import CronDataIntervalTimetable

try:  # Airflow 3
    from airflow.providers.standard.operators.bash import BashOperator
    from airflow.providers.standard.operators.python import BranchPythonOperator
    from airflow.sdk import DAG
    from airflow.sdk.exceptions import AirflowException, AirflowFailException
except ImportError:  # Airflow 2
    from airflow import DAG
    from airflow.exceptions import AirflowException, AirflowFailException
    from airflow.operators.bash import BashOperator
    from airflow.operators.python import BranchPythonOperator

DAG_ID = "beamscore_nightly"
DB_CONN_ID = "beamscore_db"  # only its password is used
PASSWORD_ENV = "PGPASSWORD"  # beamscore's sink.password_env

# An explicit data-interval timetable: logical date D covers [D 03:30, D+1 03:30) UTC and
# runs at its end, so {{ ds }} is the day before the run. (A plain cron string means
# CronTriggerTimetable in Airflow 3, whose {{ ds }} is the day of the run.)
SCHEDULE = CronDataIntervalTimetable("30 3 * * *", timezone="UTC")

DEFAULTS = {
    "mode": "dataflow",  # or local
    # dataflow: where the job runs and the template it starts
    "project": "example-project",
    "region": "europe-west1",
    "template": "gs://example-temp/beamscore/templates/beamscore.json",
    "temp_location": "gs://example-temp/beamscore/tmp",
    "staging_location": "gs://example-temp/beamscore/staging",
    "service_account": "beamscore-worker@example-project.iam.gserviceaccount.com",
    # both modes: what is scored, with which model, and where the results go
    "input_root": "gs://example-landing/documents",
    "output_dir": "gs://example-scores/beamscore",
    "registry": "gs://example-models/registry",
    "db": "postgresql://beamscore@10.0.0.5:5432/scores",
    "model": "demo",
    # local: the command and its config overlay
    "beamscore": "beamscore",
    "config": "/etc/beamscore/production.yaml",
}

# What beamscore's exit codes (docs/scheduling.md, "Exit codes") mean to the scheduler.
RETRY_LATER = {
    3: "a requested tranche is missing (not landed yet)",
    5: "a tranche is being scored by another run (lease held)",
    75: "the database stayed unreachable for sink.connect_timeout_seconds (transient)",
    130: "stopped by SIGINT",
    143: "stopped by SIGTERM",
}
FAIL_NOW = {
    1: "launch or configuration error, or records unaccounted for",
    2: "usage error",
    4: "dead letters over max_dead_letter_ratio: see `beamscore runs show RUN_ID`",
    6: "scores written; tracking requested retraining: see the run's report and the "
       "retrain_triggers row",
}


def exit_code_exception(code: int) -> AirflowException | None:
    """None for exit code 0; else the exception the task raises: AirflowFailException
    (failed at once, no retry) for 1, 2, 4 and 6, AirflowException (retried up to
    ``retries``) for 3, 5, 75, 130, 143 and any code beamscore does not document."""
    if code == 0:
        return None
    if code in FAIL_NOW:
        return AirflowFailException(f"beamscore exited {code}: {FAIL_NOW[code]}; not retried")
    why = RETRY_LATER.get(code, "not a documented beamscore exit code")
    return AirflowException(f"beamscore exited {code}: {why}; retried later")


class BeamscoreBashOperator(BashOperator):
    """A BashOperator whose failures follow beamscore's exit codes."""

    def execute(self, context: Any) -> Any:
        try:
            return super().execute(context)
        except AirflowException as failed:
            process = self.subprocess_hook.sub_process  # the command's process, if it ran
            exc = exit_code_exception(process.returncode) if process is not None else None
            if exc is None:
                raise
            raise exc from failed


def setting(name: str, quoted: bool = False) -> str:
    """A template of the Variable ``beamscore_<name>``, ``DEFAULTS[name]`` when unset;
    ``quoted`` for a shell word."""
    value = f"var.value.get('beamscore_{name}', {DEFAULTS[name]!r})"
    return "{{ " + value + (" | sh" if quoted else "") + " }}"


def choose_mode(mode: str) -> str:
    """The task of ``mode`` (the rendered Variable ``beamscore_mode``)."""
    tasks = {"dataflow": "score_dataflow", "local": "score_local"}
    if mode not in tasks:
        raise AirflowFailException(f"Variable beamscore_mode must be one of {sorted(tasks)}, "
                                   f"not {mode!r}")
    return tasks[mode]


def notify_failure(context: Any) -> None:
    """Failure alert placeholder: replace with your pager, Slack or e-mail notifier."""
    ti = context["task_instance"]
    logging.getLogger(DAG_ID).error(
        "ALERT %s.%s failed for %s (try %s): %s", ti.dag_id, ti.task_id, context.get("ds"),
        ti.try_number, context.get("exception"))


# Flex Template parameters: the underscore names of `beamscore score` flags
# (pipelines.template.options()), the ones deploy/flex-template/metadata.json declares.
TEMPLATE_PARAMETERS = {
    "date": "{{ ds }}",
    **{name: setting(name) for name in ("input_root", "output_dir", "registry", "db", "model")},
}

LOCAL_COMMAND = " ".join([
    setting("beamscore", quoted=True), "score", "--date", "{{ ds }}",
    "--config", setting("config", quoted=True),
    "--input-root", setting("input_root", quoted=True),
    "--output-dir", setting("output_dir", quoted=True),
    "--registry", setting("registry", quoted=True),
    "--db", setting("db", quoted=True),
    "--model", setting("model", quoted=True),
])

with DAG(
    dag_id=DAG_ID,
    description="Score the previous day's tranche with beamscore",
    schedule=SCHEDULE,
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
    catchup=False,
    max_active_runs=1,
    user_defined_filters={"sh": shlex.quote},
    default_args={
        "owner": "beamscore",
        "retries": 4,  # retried: 3, 5, 75, 130, 143, a failed Dataflow launch or job
        "retry_delay": dt.timedelta(minutes=30),
        "execution_timeout": dt.timedelta(hours=6),
        "on_failure_callback": notify_failure,
    },
    tags=["beamscore"],
    doc_md=__doc__,
) as dag:
    mode = BranchPythonOperator(
        task_id="choose_mode",
        python_callable=choose_mode,
        op_kwargs={"mode": setting("mode")},
        retries=0,
    )

    dataflow = DataflowStartFlexTemplateOperator(
        task_id="score_dataflow",
        project_id=setting("project"),
        location=setting("region"),
        body={
            "launchParameter": {
                "jobName": "beamscore-{{ ds_nodash }}",  # the operator appends a unique suffix
                "containerSpecGcsPath": setting("template"),
                "parameters": TEMPLATE_PARAMETERS,
                "environment": {
                    "tempLocation": setting("temp_location"),
                    "stagingLocation": setting("staging_location"),
                    "serviceAccountEmail": setting("service_account"),
                },
            },
        },
        wait_until_finished=True,
    )

    local = BeamscoreBashOperator(
        task_id="score_local",
        bash_command=LOCAL_COMMAND,
        env={PASSWORD_ENV: "{{ conn.get('" + DB_CONN_ID + "').password | default('', true) }}"},
        append_env=True,
        skip_on_exit_code=None,  # no exit code means "skipped": see exit_code_exception
    )

    mode >> [dataflow, local]
