"""What the checks of make airflow-test share: the DAG's id, the logical date checked, the
Variables and connection of a fully configured deployment, one ``ok`` line per check,
and Airflow's own output kept out of the way."""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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
