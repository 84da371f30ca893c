"""``dag.test()`` in local mode: the real beamscore on sample tranches, and what Airflow
makes of each exit code (success, retry, failure without retry, one alert each)."""

from __future__ import annotations

import datetime as dt
import inspect
import logging
import os
import sqlite3
import subprocess
import tempfile
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

from checks import DAG_ID, REPO, ok, quiet, variables_env


class Alerts(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def _sample_data(beamscore: Path, repo_python: Path) -> Path:
    """Sample tranches and the demo model, made by the repository's own commands."""
    data = Path(tempfile.mkdtemp(prefix="data-", dir=os.environ.get("AIRFLOW_HOME")))
    for command in ([str(repo_python), "-m", "landing.samples", "--root", str(data)],
                    [str(beamscore), "train", "--docs", str(data / "train" / "*.jsonl"),
                     "--name", "demo", "--registry", str(data / "registry")]):
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
        assert done.returncode == 0, (command, done.stderr[-3000:])
    ok(f"sample tranches 2026-01-01..03 and model demo:1 in {data}")
    return data


def _runner(dag: Any, base: dict[str, str]) -> Callable[..., tuple[str, int]]:
    """``run(day, **variables)``: ``dag.test`` of ``day`` with the Variables ``base`` and
    ``variables``; the state and try number of ``score_local`` (one immediate retry)."""
    try:  # Airflow 2: dag_run_note refers to FAB's ab_user table, known once imported
        import airflow.providers.fab.auth_manager.models  # noqa: F401
    except ImportError:
        pass
    date_arg = ("logical_date" if "logical_date" in inspect.signature(dag.test).parameters
                else "execution_date")  # Airflow 2
    task = dag.get_task("score_local")
    task.retries, task.retry_delay = 1, dt.timedelta(0)  # one immediate retry, to see it

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

    return run


def check_local_runs(dag: Any, beamscore: Path, repo_python: Path) -> None:
    """``dag.test()`` in local mode: the real beamscore on sample tranches."""
    data = _sample_data(beamscore, repo_python)
    strict = data / "strict.yaml"
    strict.write_text("max_dead_letter_ratio: 0.001\n")  # the samples have 0.5% dead letters
    down = data / "down.yaml"  # PostgreSQL on a port nothing listens on, 1 s of retries
    down.write_text("sink:\n  connect_timeout_seconds: 1\n")
    db = data / "beamscore.db"
    base = {"mode": "local", "beamscore": str(beamscore), "config": "local",
            "input_root": str(data / "landing"), "output_dir": str(data / "output"),
            "registry": str(data / "registry"), "db": f"sqlite:///{db}", "model": "demo"}
    alerts = Alerts()
    logging.getLogger(DAG_ID).addHandler(alerts)
    run = _runner(dag, base)

    def rows() -> int:
        with closing(sqlite3.connect(db)) as con:
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
        assert run("2026-01-03", config=str(down),
                   db="postgresql://beamscore@127.0.0.1:9/scores") == ("failed", 2)
        ok("dag.test 2026-01-03 with the database down: exit 75, retried (try 2), then "
           "failed")
    finally:
        os.environ.clear()
        os.environ.update(saved)
    failed = [line for line in alerts.lines if line.startswith("ALERT")]
    assert len(failed) == 4, alerts.lines
    ok("on_failure_callback called once per failed task: " + " | ".join(failed)[:300])
