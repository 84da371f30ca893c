#!/bin/sh
# beamscore-retry.sh: run a beamscore command; while it exits 75 (EX_TEMPFAIL: the
# database stayed unreachable for sink.connect_timeout_seconds) run it again after
# BEAMSCORE_RETRY_DELAY seconds (default 1800), at most BEAMSCORE_RETRIES more times
# (default 4). Every other exit code is returned at once: 0 success; 3 and 5 are left to
# the next hour the crontab lists; 1, 2, 4 and 6 need a person.
# Usage: beamscore-retry.sh /opt/beamscore/venv/bin/beamscore score --config FILE
delay=${BEAMSCORE_RETRY_DELAY:-1800}
retries=${BEAMSCORE_RETRIES:-4}
try=1
while :; do
  "$@"
  rc=$?
  if [ "$rc" -ne 75 ] || [ "$try" -gt "$retries" ]; then
    exit "$rc"
  fi
  echo "beamscore-retry: exit 75 (database unreachable) on try $try; again in ${delay}s" >&2
  sleep "$delay"
  try=$((try + 1))
done
