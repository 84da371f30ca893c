"""A command that lives no longer than the beamscore process that started it.

``tracking.command`` (a retraining job: minutes) runs under a guard, a small process of
its own between the launcher and the command:

    launcher --(pipe: the launcher's life)--> guard --> sh -c COMMAND (its own group)

- A SIGINT or SIGTERM the launcher passes on (``signals.forward_stops`` signals the
  guard's process group) is forwarded by the guard to the command's process group.
- The guard exits as the command did (its exit status, or the same signal), so the
  launcher records the outcome as it would for the command itself.
- The launcher holds the write end of a pipe whose read end the guard watches. However
  the launcher ends, a SIGKILL or a crash included, the kernel closes that end; the
  guard then sees end-of-file with the command still running, sends the command's
  process group SIGTERM, SIGKILL after ``GRACE_SECONDS``, and records the trigger's
  outcome itself (``command_failed`` with the signal, or ``command_succeeded`` if the
  command had just ended well), which the launcher can no longer do. A trigger
  therefore never stays ``requested`` with nobody running its command.

``run_guarded`` is the launcher's side; ``main`` (``python -m
pipelines.orchestration.command_guard``) the guard's. The guard imports the database
layer only when it must record an outcome itself.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import select
import signal
import subprocess
import sys
import time

from pipelines.orchestration.signals import forward_stops
from store.session import DatabaseSettings

GRACE_SECONDS = 10.0  # from SIGTERM to SIGKILL, once the launcher is gone
_POLL_SECONDS = 0.2  # how often the guard looks at its command between pipe events


def run_guarded(command: str, database: DatabaseSettings, trigger_id: str,
                grace: float = GRACE_SECONDS) -> int:
    """Run ``command`` (a shell command line) under a guard, passing stop signals on
    (within ``signals.deferred``); its exit code, negative for a signal as
    ``Popen.returncode`` has it. Should this process end first, the guard stops the
    command (SIGKILL ``grace`` seconds after SIGTERM) and records ``trigger_id``'s
    outcome in ``database``."""
    watch, alive = os.pipe()  # the guard reads ``watch``; ``alive`` closes when we end
    record = json.dumps({"database": dataclasses.asdict(database), "trigger_id": trigger_id})
    argv = [sys.executable, "-m", __name__, "--watch-fd", str(watch), "--record", record,
            "--grace", str(grace), "--", command]
    try:
        with subprocess.Popen(argv, start_new_session=True, pass_fds=(watch,)) as proc:
            os.close(watch)
            watch = -1
            with forward_stops(proc):
                return proc.wait()
    finally:
        if watch >= 0:
            os.close(watch)
        os.close(alive)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="command_guard", description=__doc__.splitlines()[0])
    ap.add_argument("--watch-fd", type=int, required=True)
    ap.add_argument("--record", required=True, help="JSON: database settings, trigger id")
    ap.add_argument("--grace", type=float, default=GRACE_SECONDS)
    ap.add_argument("command")
    args = ap.parse_args(argv)
    started: list[subprocess.Popen[bytes]] = []
    early: list[int] = []  # stop signals that came before the command started

    def forward(signum: int, _frame: object) -> None:
        if not started:
            early.append(signum)
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(started[0].pid, signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, forward)  # caught, so the command starts with the default
    proc = subprocess.Popen(args.command, shell=True, process_group=0)
    started.append(proc)
    for signum in early:
        forward(signum, None)
    if _wait(proc, args.watch_fd):
        if proc.poll() is None:
            _say("beamscore ended while its retraining command ran: stopping the command")
        _stop(proc, args.grace)
        _record(args.record, proc.returncode)
    return _exit_like(proc.returncode)


def _wait(proc: subprocess.Popen[bytes], watch_fd: int) -> bool:
    """Until the command ends (False: the launcher records it) or the launcher has gone
    (True: the guard stops the command, if it still runs, and records it)."""
    while proc.poll() is None:
        try:
            ready, _, _ = select.select([watch_fd], [], [], _POLL_SECONDS)
        except InterruptedError:  # a forwarded signal: look again
            continue
        if ready and not os.read(watch_fd, 1):  # end of file: the launcher has ended
            return True
    return False


def _stop(proc: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM to the command's process group, SIGKILL after ``grace`` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, None)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    # What the command left in its group after it ended goes too.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _record(record: str, code: int) -> None:
    """The trigger's outcome, as the launcher would have recorded it."""
    from pipelines.configuration.connection import opened
    from store import monitoring

    values = json.loads(record)
    database = DatabaseSettings(**values["database"])
    status = "command_succeeded" if code == 0 else "command_failed"
    for attempt in range(3):
        try:
            with opened(database) as db:
                monitoring.finish_trigger(db, values["trigger_id"], status, code)
            _say(f"retraining trigger {values['trigger_id']}: {status} ({code})")
            return
        except Exception as exc:  # noqa: BLE001 - say why, once the tries are spent
            if attempt == 2:
                _say(f"could not record retraining trigger {values['trigger_id']}: {exc}")
            time.sleep(1.0)


def _exit_like(code: int) -> int:
    """The guard's exit: the command's status, or death by the command's signal."""
    if code < 0:
        with contextlib.suppress(OSError, ValueError):  # SIGKILL's is the default anyway
            signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    return code


def _say(text: str) -> None:
    with contextlib.suppress(OSError, ValueError):
        print(f"beamscore command guard: {text}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
