#!/usr/bin/env bash
# make airflow-test: loads beamscore_dag.py in a real Airflow and checks it (check_dag.py):
# structure, schedule, the exit-code mapping on real processes, the templates rendered by
# `airflow tasks render`, and dag.test() runs of the local mode with the real beamscore.
#
# Opt-in, not in CI. The first run installs Airflow with the Google and Apache Beam
# providers (about 2.2 GB, 4 minutes) into $AIRFLOW_TEST_VENV, default
# /var/tmp/beamscore-airflow-venv; later runs reuse it while the pins below are unchanged.
# Airflow's constraints files are on GitHub, which this setup cannot reach, so the
# versions are pinned here and pip resolves the rest.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
VENV=${AIRFLOW_TEST_VENV:-/var/tmp/beamscore-airflow-venv}
PYTHON=${AIRFLOW_TEST_PYTHON:-$(command -v python3.11 || command -v python3)}
# DataflowStartFlexTemplateOperator imports the Apache Beam provider's hook. Another set,
# e.g. Airflow 2: AIRFLOW_TEST_PINS="apache-airflow==2.11.0 apache-airflow-providers-google==22.8.0
# apache-airflow-providers-apache-beam==6.3.1" AIRFLOW_TEST_VENV=/var/tmp/beamscore-airflow2-venv
PINS=${AIRFLOW_TEST_PINS:-apache-airflow==3.3.2 apache-airflow-providers-google==22.8.0 apache-airflow-providers-apache-beam==6.3.1}
start=$SECONDS

if [[ ! -x "$VENV/bin/airflow" || "$(cat "$VENV/.beamscore-pins" 2>/dev/null)" != "$PINS" ]]; then
  echo "installing $PINS into $VENV (with $("$PYTHON" --version))"
  if [[ -e "$VENV" && ! -e "$VENV/.beamscore-airflow-test" ]]; then
    echo "$VENV exists and was not made by this script: not replacing it" >&2
    exit 1
  fi
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
  touch "$VENV/.beamscore-airflow-test"
  # (the grep drops pip's warnings about this machine's local index paths)
  "$VENV/bin/pip" install --quiet --upgrade pip 2>&1 | { grep -v "^WARNING: Location 'file:" || true; }
  # shellcheck disable=SC2086  # one word per requirement
  "$VENV/bin/pip" install --quiet $PINS 2>&1 | { grep -v "^WARNING: Location 'file:" || true; }
  "$VENV/bin/pip" check
  echo "$PINS" > "$VENV/.beamscore-pins"
  echo "installed in $((SECONDS - start)) s"
else
  echo "reusing $VENV ($PINS)"
fi

# The local-mode runs use the repository's own beamscore.
make -C "$REPO" --no-print-directory install

AIRFLOW_HOME=$(mktemp -d /tmp/beamscore-airflow-home.XXXXXX)
trap 'rm -rf "$AIRFLOW_HOME"' EXIT
export AIRFLOW_HOME
export AIRFLOW__CORE__DAGS_FOLDER="$HERE"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__LOGGING__LOGGING_LEVEL=WARNING
unset "${!AIRFLOW_VAR_@}" "${!AIRFLOW_CONN_@}"

# A database for `airflow tasks render` and dag.test(); the DAG serialized into it.
"$VENV/bin/airflow" db migrate > "$AIRFLOW_HOME/migrate.log" 2>&1 \
  || { tail -50 "$AIRFLOW_HOME/migrate.log"; exit 1; }
"$VENV/bin/airflow" dags reserialize > "$AIRFLOW_HOME/reserialize.log" 2>&1 \
  || { tail -50 "$AIRFLOW_HOME/reserialize.log"; exit 1; }

timeout 900 "$VENV/bin/python" "$HERE/check_dag.py" \
  --beamscore "$REPO/.venv/bin/beamscore" --repo-python "$REPO/.venv/bin/python"
echo "airflow-test passed in $((SECONDS - start)) s"
