"""The schedulers' handling of beamscore's exit codes: 75 (the database stayed
unreachable, EX_TEMPFAIL) is retried by the Airflow DAG, the systemd unit and the cron
wrapper; 6 (retraining requested) and the other "a person must look" codes are not."""

from __future__ import annotations

import ast
import configparser
import os
import subprocess
from pathlib import Path

from pipelines.orchestration.exit_codes import EXIT_RETRAIN, EXIT_TEMPFAIL

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
WRAPPER = DEPLOY / "systemd" / "beamscore-retry.sh"


def _dag_constant(name: str) -> dict[int, str]:
    """A module-level dict literal of the DAG file (Airflow is not installed here)."""
    tree = ast.parse((DEPLOY / "airflow" / "beamscore_dag.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == name for t in node.targets):
            value: dict[int, str] = ast.literal_eval(node.value)
            return value
    raise AssertionError(f"{name} not found")


def test_the_airflow_dag_retries_75_and_fails_6_at_once() -> None:
    retry, fail = _dag_constant("RETRY_LATER"), _dag_constant("FAIL_NOW")
    assert EXIT_TEMPFAIL in retry and EXIT_TEMPFAIL not in fail
    assert EXIT_RETRAIN in fail and EXIT_RETRAIN not in retry


def test_the_systemd_unit_restarts_on_75_and_not_on_6() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read_string((DEPLOY / "systemd" / "beamscore.service").read_text())
    service = unit["Service"]
    assert service["Restart"] == "on-failure"  # every failure exit, 75 included ...
    prevented = {int(c) for c in service["RestartPreventExitStatus"].split()}
    assert EXIT_TEMPFAIL not in prevented and EXIT_RETRAIN in prevented  # ... but these


def _wrapper(tmp_path: Path, codes: list[int], retries: int) -> tuple[int, int, str]:
    """Run the cron wrapper on a command exiting ``codes`` in turn; (exit code, calls,
    stderr)."""
    calls = tmp_path / "calls"
    fake = tmp_path / "beamscore"
    fake.write_text("#!/bin/sh\n"
                    f'n=$(wc -l < "{calls}" 2>/dev/null || echo 0)\n'
                    f'echo "$*" >> "{calls}"\n'
                    f"set -- {' '.join(map(str, codes))}\n"
                    'shift "$n"\nexit "${1:-0}"\n')
    fake.chmod(0o755)
    env = os.environ | {"BEAMSCORE_RETRY_DELAY": "0", "BEAMSCORE_RETRIES": str(retries)}
    done = subprocess.run([str(WRAPPER), str(fake), "score", "--config", "x.yaml"], env=env,
                          capture_output=True, text=True, timeout=60)
    lines = calls.read_text().splitlines()
    assert set(lines) == {"score --config x.yaml"}, lines
    return done.returncode, len(lines), done.stderr


def test_the_cron_wrapper_runs_the_command_again_while_it_exits_75(tmp_path: Path) -> None:
    rc, calls, err = _wrapper(tmp_path, [75, 75, 0], retries=4)
    assert (rc, calls) == (0, 3) and err.count("exit 75") == 2


def test_the_cron_wrapper_gives_up_after_its_retries(tmp_path: Path) -> None:
    assert _wrapper(tmp_path, [75] * 10, retries=2)[:2] == (75, 3)


def test_the_cron_wrapper_returns_other_codes_at_once(tmp_path: Path) -> None:
    for code in (EXIT_RETRAIN, 1, 3):
        calls = tmp_path / "calls"
        calls.unlink(missing_ok=True)
        assert _wrapper(tmp_path, [code, 0], retries=4)[:2] == (code, 1)
