"""A pipeline that fails in its workers ends the command by its cause: a database that
stayed away exits 75 (retried by every scheduler), any other error 1, each with one
``beamscore: error:`` line; the worker's whole traceback goes to the log."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from engine.forkserver import ForkServer
from engine.runner import ForkServerRunner
from pipelines.orchestration.exit_codes import (
    EXIT_ERROR,
    EXIT_TEMPFAIL,
    guarded,
    worker_cause,
)
from store.database import DatabaseUnreachable


class _Fail(beam.DoFn):  # type: ignore[misc]
    def __init__(self, kind: str) -> None:
        self._kind = kind

    def process(self, element: int) -> Iterator[int]:
        if self._kind == "away":
            try:
                raise OSError("connection refused")
            except OSError as exc:
                raise DatabaseUnreachable(
                    "cannot connect to postgresql://scorer@db:5432/scores: connection "
                    "refused\n\tIs the server running on that host?") from exc
        if self._kind == "starting":  # a server's message with DETAIL and CONTEXT lines
            raise DatabaseUnreachable(
                "the database system is not yet accepting connections\nDETAIL:  Consistent "
                "recovery state has not been yet reached.\nCONTEXT: while connecting")
        raise ValueError("a value no row should hold")
        yield element


@pytest.fixture(scope="module")
def server() -> Iterator[ForkServer]:
    fork_server = ForkServer(preload=[])
    fork_server.start()
    yield fork_server
    fork_server.stop()


def _failure(server: ForkServer, kind: str) -> Exception:
    """The error a two-worker pipeline whose DoFn raises ``kind`` ends with."""
    p = beam.Pipeline(runner=ForkServerRunner(server),
                      options=PipelineOptions(direct_num_workers=2))
    _ = p | beam.Create([1, 2, 3, 4]) | "Write to database" >> beam.ParDo(_Fail(kind))
    with pytest.raises(Exception) as raised:
        p.run().wait_until_finish()
    return raised.value


def _exit(exc: Exception) -> int:
    def command() -> int:
        raise exc
    return guarded(command)


@pytest.mark.slow
def test_a_worker_that_found_the_database_away_exits_75_with_one_line(
        server: ForkServer, capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    failure = _failure(server, "away")
    assert not isinstance(failure, DatabaseUnreachable)  # a worker's error, as text
    assert worker_cause(str(failure)) == (
        "store.backends.base.DatabaseUnreachable",
        "cannot connect to postgresql://scorer@db:5432/scores: connection refused "
        "Is the server running on that host?")
    with caplog.at_level(logging.INFO, logger="beamscore"):
        assert _exit(failure) == EXIT_TEMPFAIL
    err = capsys.readouterr().err
    assert err == ("beamscore: error: database unreachable, retry later (exit 75): cannot "
                   "connect to postgresql://scorer@db:5432/scores: connection refused Is the "
                   "server running on that host?\n")
    assert "Traceback (most recent call last)" in caplog.text


@pytest.mark.slow
def test_a_servers_detail_lines_are_part_of_the_message_not_its_cause(
        server: ForkServer, capsys: pytest.CaptureFixture[str]) -> None:
    failure = _failure(server, "starting")
    assert worker_cause(str(failure)) == (
        "store.backends.base.DatabaseUnreachable",
        "the database system is not yet accepting connections DETAIL:  Consistent recovery "
        "state has not been yet reached. CONTEXT: while connecting")
    assert _exit(failure) == EXIT_TEMPFAIL
    assert capsys.readouterr().err == (
        "beamscore: error: database unreachable, retry later (exit 75): the database system "
        "is not yet accepting connections DETAIL: Consistent recovery state has not been yet "
        "reached. CONTEXT: while connecting\n")
    assert _exit(DatabaseUnreachable("down\nDETAIL:  restarting")) == EXIT_TEMPFAIL
    assert capsys.readouterr().err.count("\n") == 1  # raised in the launcher: one line too


@pytest.mark.slow
def test_any_other_worker_error_exits_1_naming_it_in_one_line(
        server: ForkServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert _exit(_failure(server, "value")) == EXIT_ERROR
    assert capsys.readouterr().err == (
        "beamscore: error: run failed: ValueError: a value no row should hold\n")


def test_a_message_without_a_traceback_has_no_worker_cause() -> None:
    assert worker_cause("fork server did not start: no module x") is None
    assert worker_cause("Traceback (most recent call last):\n  File \"x\"") is None


def test_a_worker_lost_mid_run_exits_75(capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Beam's runner ends a run whose worker was killed (the OOM killer's SIGKILL) with
    this error: a transient failure that a rerun may well pass, not a configuration
    error. Here no fork server told how the worker ended."""
    from engine import environment

    monkeypatch.setattr(environment, "_FAILURES", [])
    assert _exit(RuntimeError("Channel closed prematurely.")) == EXIT_TEMPFAIL
    assert capsys.readouterr().err == (
        "beamscore: error: a worker process was lost mid-run (killed, e.g. by the OOM "
        "killer: Channel closed prematurely); retry later (exit 75)\n")
