"""The suite's PostgreSQL support: a missing server is one line saying how to start it,
and the server's lock keeps a restarting test apart from every other postgres test."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import postgres


@pytest.fixture
def lock_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    path = str(tmp_path / "server.lock")
    monkeypatch.setattr(postgres, "lock_path", lambda: path)
    yield path


def _can_take(path: str, operation: int) -> bool:
    """Whether another holder could take the lock now (a separate open file, as another
    process would have)."""
    fd = os.open(path, os.O_RDONLY | os.O_CREAT)
    try:
        fcntl.flock(fd, operation | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def test_shared_holders_run_together_and_keep_a_restart_out(lock_file: str) -> None:
    with postgres.server_lock(exclusive=False):
        assert _can_take(lock_file, fcntl.LOCK_SH)
        assert not _can_take(lock_file, fcntl.LOCK_EX)
    assert _can_take(lock_file, fcntl.LOCK_EX)


def test_a_restart_keeps_every_other_test_out(lock_file: str) -> None:
    with postgres.server_lock(exclusive=True):
        assert not _can_take(lock_file, fcntl.LOCK_SH)
    assert _can_take(lock_file, fcntl.LOCK_SH)


def test_a_missing_server_is_one_line_naming_it_and_how_to_start_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(postgres, "PG", "postgresql://127.0.0.1:1")
    problem = postgres.unreachable.__wrapped__(attempts=1)
    assert problem is not None and "\n" not in problem
    assert problem.startswith("PostgreSQL not reachable at postgresql://127.0.0.1:1 (")
    assert "pg_ctlcluster" in problem and "make test-fast" in problem


@pytest.mark.postgres
def test_the_local_server_is_reachable() -> None:
    assert postgres.unreachable.__wrapped__(attempts=1) is None
