"""Stop signals in the launcher: raised at once in a run, deferred in its closing steps
(which then complete), and passed on to a command those steps run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import weakref
from pathlib import Path

import pytest

from pipelines.orchestration.signals import (
    Interrupted,
    deferred,
    forward_stops,
    interruptible,
)


def test_a_stop_is_raised_at_once_outside_a_deferred_block() -> None:
    with pytest.raises(Interrupted) as raised, interruptible():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
        pytest.fail("not interrupted")
    assert raised.value.exit_code == 143


def test_a_stop_in_a_deferred_block_is_raised_once_the_block_is_done() -> None:
    done: list[str] = []
    with pytest.raises(Interrupted) as raised, interruptible():
        with deferred():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            done.append("report")
            with deferred():  # nested: the outermost raises
                os.kill(os.getpid(), signal.SIGTERM)
                done.append("decision")
            done.append("after the inner block")
        pytest.fail("not raised at the end of the block")
    assert done == ["report", "decision", "after the inner block"]
    assert raised.value.signum == signal.SIGINT


def test_a_deferred_block_outside_a_run_changes_nothing() -> None:
    """Without ``interruptible`` (a library caller), SIGINT stays KeyboardInterrupt."""
    with pytest.raises(KeyboardInterrupt), deferred():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)


def test_a_stop_reaches_the_command_of_a_deferred_block_at_once(tmp_path: Path) -> None:
    """The command (and what its shell started) gets the signal as it comes and the
    block ends when the command does; the stop is raised after."""
    marker = tmp_path / "finished"
    codes: list[int] = []
    started = time.monotonic()
    with pytest.raises(Interrupted), interruptible(), deferred():
        with subprocess.Popen(f"sleep 30; touch {marker}", shell=True,
                              start_new_session=True) as proc, forward_stops(proc):
            subprocess.Popen([sys.executable, "-c",
                              f"import os, signal, time; time.sleep(0.5); "
                              f"os.kill({os.getpid()}, signal.SIGTERM)"])
            codes.append(proc.wait())
    assert time.monotonic() - started < 15
    assert codes and codes[0] != 0 and not marker.exists()


def test_a_stop_noted_before_the_command_starts_reaches_it_when_it_does(
        tmp_path: Path) -> None:
    marker = tmp_path / "finished"
    started = time.monotonic()
    with pytest.raises(Interrupted), interruptible(), deferred():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)  # noted, not raised
        with subprocess.Popen(f"sleep 30; touch {marker}", shell=True,
                              start_new_session=True) as proc, forward_stops(proc):
            assert proc.wait() != 0
    assert time.monotonic() - started < 15 and not marker.exists()


class _Collected:
    """An object whose collection runs a weak reference's callback (where Python prints
    and drops an exception instead of raising it)."""


@pytest.mark.parametrize("in_callback", [1, 3])
def test_a_stop_that_comes_in_a_callback_is_raised_once_out_of_it(in_callback: int) -> None:
    """The signal's exception, raised in a weak reference's callback (Beam's caches are
    weak dictionaries, emptied at a wave's end), is dropped there by Python: the stop
    is raised again once the main thread is out of such code; a callback that follows
    at once (several objects collected) delays it, never loses it."""
    seen: list[str] = []

    def callback(_ref: object) -> None:
        seen.append("callback")
        if len(seen) == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)  # the handler runs here, in the callback

    objects = [_Collected() for _ in range(in_callback)]
    refs = [weakref.ref(o, callback) for o in objects]
    started = time.monotonic()
    with pytest.raises(Interrupted) as raised, interruptible():
        objects.clear()  # the callbacks run, one after the other
        seen.append("after the callbacks")
        time.sleep(5)
        pytest.fail("the stop was lost in the callback")
    assert raised.value.signum == signal.SIGTERM and refs
    assert seen[:in_callback] == ["callback"] * in_callback
    assert time.monotonic() - started < 2


def test_a_second_stop_is_ignored_while_the_first_is_handled() -> None:
    cleaned: list[str] = []
    with pytest.raises(Interrupted) as raised, interruptible():
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
        except Interrupted:
            os.kill(os.getpid(), signal.SIGTERM)  # while the launcher cleans up
            time.sleep(0.05)
            cleaned.append("cleaned up")
            raise
    assert cleaned == ["cleaned up"] and raised.value.signum == signal.SIGINT
