"""Launch against a database that is down: ``beamscore score`` waits for it for up to
``sink.connect_timeout_seconds`` and exits 75 (transient, retry later) if it stays
down; a PostgreSQL that comes up within that window gives a normal run; a role or
database the server refuses ends it at once with 1. And there is
no default model: ``score`` and ``plan`` without one exit 2."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest

from landing.samples import make_docs, write_tranche
from pipelines.orchestration.exit_codes import EXIT_ERROR, EXIT_OK, EXIT_TEMPFAIL, EXIT_USAGE
from tests.pipelines.helpers import run_cli

DAY = "2026-03-01"
NO_MODEL = "no model: pass --model NAME or set model in the config"


@pytest.fixture
def landing(tmp_path: Path) -> str:
    root = tmp_path / "landing"
    write_tranche(str(root), DAY, list(make_docs(60, seed=5, prefix="db")), "jsonl")
    return str(root)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class OutageProxy:
    """A TCP proxy to ``target`` on ``port`` of 127.0.0.1 whose ``cut(seconds)`` is a
    database that goes away mid-run: every open connection is closed and new ones are
    refused (nothing listens) until it comes back. ``down_for``: it first listens that
    many seconds after it is made (a database that comes back from a restart);
    ``listening_at`` is when it first did."""

    def __init__(self, port: int, target: tuple[str, int], down_for: float = 0.0):
        self.port, self.target = port, target
        self.cuts: list[tuple[float, float]] = []
        self.listening_at: float | None = None
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        self._down_until = time.monotonic() + down_for
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            if time.monotonic() < self._down_until:
                time.sleep(0.05)
                continue
            with socket.socket() as server:
                server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                server.bind(("127.0.0.1", self.port))
                server.listen(64)
                server.settimeout(0.05)
                self.listening_at = self.listening_at or time.monotonic()
                while not self._stop.is_set() and time.monotonic() >= self._down_until:
                    try:
                        client, _ = server.accept()
                    except TimeoutError:
                        continue
                    upstream = socket.create_connection(self.target)
                    with self._lock:
                        if time.monotonic() < self._down_until:  # cut meanwhile: refused
                            client.close()
                            upstream.close()
                            break
                        self._open += [client, upstream]
                    for a, b in ((client, upstream), (upstream, client)):
                        threading.Thread(target=_pipe, args=(a, b), daemon=True).start()
                # Stop listening for every holder of the socket: a process forked since
                # (the fork server, its workers) holds it too, and closing this copy
                # alone would leave connections queued unanswered, not refused.
                server.shutdown(socket.SHUT_RDWR)

    def cut(self, seconds: float) -> None:
        with self._lock:  # no connection accepted from now on is kept
            started = time.monotonic()
            self._down_until = started + seconds
            self.cuts.append((started, self._down_until))
            for s in self._open:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self._open.clear()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def _score(landing: str, registry: str, db: str, out: Path, *extra: str) -> tuple[int, str,
                                                                                   float]:
    started = time.monotonic()
    result = run_cli("score", "--date", DAY, "--input-root", landing, "--registry", registry,
                     "--db", db, "--output-dir", str(out), *extra)
    return result.rc, result.err, time.monotonic() - started


@pytest.mark.postgres
def test_a_database_on_a_closed_port_ends_the_launch_with_75_after_the_timeout(
        landing: str, registry_root: str, tmp_path: Path) -> None:
    db = f"postgresql://beamscore@127.0.0.1:{_free_port()}/test"  # nothing listens there
    rc, err, elapsed = _score(landing, registry_root, db, tmp_path / "out",
                              "--sink-connect-timeout-seconds", "5")
    assert rc == EXIT_TEMPFAIL == 75, err
    assert elapsed >= 5.0, f"gave up after {elapsed:.2f}s, before the 5 s window ended"
    assert elapsed < 30.0
    assert "database unreachable, retry later" in err and "cannot connect" in err, err
    assert not (tmp_path / "out").exists(), "nothing is scored without the database"


@pytest.mark.postgres
def test_a_postgresql_that_comes_up_3_s_after_launch_gives_a_normal_run(
        landing: str, registry_root: str, tmp_path: Path, pg_url: str,
        caplog: pytest.LogCaptureFixture) -> None:
    parts = urlsplit(pg_url)
    port = _free_port()
    db = parts._replace(netloc=f"127.0.0.1:{port}").geturl()
    launched = time.monotonic()
    late_proxy = OutageProxy(port, (parts.hostname or "127.0.0.1", parts.port or 5432),
                             down_for=3.0)
    try:
        rc, err, elapsed = _score(landing, registry_root, db, tmp_path / "out",
                                  "--sink-connect-timeout-seconds", "60")
    finally:
        late_proxy.stop()
    assert rc == EXIT_OK, err
    assert late_proxy.listening_at is not None and late_proxy.listening_at - launched >= 3.0
    assert elapsed >= 3.0
    assert any("transient database error" in r.getMessage() for r in caplog.records)
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute("SELECT count(*) FROM predictions").fetchone()
        status = conn.execute("SELECT status FROM runs").fetchall()
    assert rows is not None and rows[0] > 0
    assert [s for (s,) in status] == ["succeeded"], status


@pytest.mark.postgres
@pytest.mark.parametrize("netloc, named", [("nosuchrole@{}", "nosuchrole"),
                                           ("{}", "nosuchdatabase")])
def test_a_role_or_database_the_server_refuses_ends_the_launch_with_1_at_once(
        landing: str, registry_root: str, tmp_path: Path, pg_url: str, netloc: str,
        named: str) -> None:
    parts = urlsplit(pg_url)
    host = parts.netloc.rpartition("@")[2]
    db = parts._replace(netloc=netloc.format(host), path="/nosuchdatabase"
                        if named == "nosuchdatabase" else parts.path).geturl()
    rc, err, elapsed = _score(landing, registry_root, db, tmp_path / "out",
                              "--sink-connect-timeout-seconds", "60")
    assert rc == EXIT_ERROR == 1, err
    assert elapsed < 30.0, "a refusal is not waited out like a server that is down"
    assert named in err and "run failed" not in err and "retry later" not in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["score", "plan"])
def test_score_and_plan_without_a_model_exit_2(
        command: str, landing: str, registry_root: str, tmp_path: Path) -> None:
    """The bundled configs name no model and the schema has no default: the registry's
    ``demo`` model is never picked silently."""
    result = run_cli(command, "--date", DAY, "--input-root", landing, "--registry",
                     registry_root, "--db", f"sqlite:///{tmp_path / 's.db'}",
                     "--output-dir", str(tmp_path / "out"), model=None)
    assert result.rc == EXIT_USAGE == 2, result.err
    assert f"beamscore: error: {NO_MODEL}" in result.err
    assert not (tmp_path / "s.db").exists() and not (tmp_path / "out").exists()
    named = run_cli(command, "--date", DAY, "--input-root", landing, "--registry",
                    registry_root, "--db", f"sqlite:///{tmp_path / 's.db'}",
                    "--output-dir", str(tmp_path / "out"), "--model", "demo", model=None)
    assert named.rc == EXIT_OK, named.err


@pytest.mark.postgres
@pytest.mark.slow
def test_a_database_away_for_15_s_mid_run_is_waited_for_and_the_run_completes(
        registry_root: str, tmp_path: Path, pg_url: str) -> None:
    """The sink's writers find the database gone for 15 s (every connection dropped,
    new ones refused) with ``sink.max_retries`` 2: the outage, not the count of tries,
    bounds the wait (``sink.connect_timeout_seconds``), and the run ends complete,
    every record once, its wait counted as waiting for the database."""
    root = tmp_path / "landing"
    write_tranche(str(root), DAY, list(make_docs(3000, seed=9, prefix="away")), "jsonl")
    parts = urlsplit(pg_url)
    proxy = OutageProxy(_free_port(), (parts.hostname or "127.0.0.1", parts.port or 5432))
    db = parts._replace(netloc=f"{parts.netloc.rpartition('@')[0]}@127.0.0.1:{proxy.port}"
                        if "@" in parts.netloc else f"127.0.0.1:{proxy.port}").geturl()

    def cut_once_writing() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with psycopg.connect(pg_url) as conn:
                if conn.execute("SELECT to_regclass('predictions') IS NOT NULL").fetchone()[0] \
                        and conn.execute("SELECT count(*) FROM predictions").fetchone()[0]:
                    proxy.cut(15.0)
                    return
            time.sleep(0.1)

    cutter = threading.Thread(target=cut_once_writing, daemon=True)
    cutter.start()
    try:
        rc, err, _ = _score(str(root), registry_root, db, tmp_path / "out", "--workers", "2",
                            "--sink-max-rows-per-second", "400", "--sink-max-retries", "2",
                            "--sink-connect-timeout-seconds", "60")
    finally:
        cutter.join(timeout=5)
        proxy.stop()
    assert proxy.cuts, "the database was never cut: the run ended before it wrote"
    assert rc == EXIT_OK, err
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute("SELECT count(*), count(DISTINCT doc_id) FROM predictions"
                            ).fetchone()
        [(status, counts)] = conn.execute("SELECT status, counts FROM runs").fetchall()
    assert rows == (3000, 3000) and status == "succeeded"
    assert counts["total"]["written"] == 3000 and counts["total"]["dead_lettered"] == 0


def _redis_outage_run(registry_root: str, tmp_path: Path, cut: float, timeout: str
                      ) -> tuple[int, str, OutageProxy, Path]:
    """A SQLite run whose rate limit and connection slots live in Redis behind a proxy
    that is cut for ``cut`` seconds once the first rows are written."""
    import sqlite3

    root = tmp_path / "landing"
    write_tranche(str(root), DAY, list(make_docs(3000, seed=10, prefix="rd")), "jsonl")
    proxy = OutageProxy(_free_port(), ("127.0.0.1", 6379))
    db = tmp_path / "s.db"

    def cut_once_writing() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                with sqlite3.connect(db, timeout=5) as conn:
                    if conn.execute("SELECT count(*) FROM predictions").fetchone()[0]:
                        proxy.cut(cut)
                        return
            except sqlite3.OperationalError:
                pass
            time.sleep(0.05)

    cutter = threading.Thread(target=cut_once_writing, daemon=True)
    cutter.start()
    try:
        rc, err, _ = _score(str(root), registry_root, f"sqlite:///{db}", tmp_path / "out",
                            "--workers", "2", "--sink-max-rows-per-second", "600",
                            "--sink-batch-rows", "100", "--sink-redis-url",
                            f"redis://127.0.0.1:{proxy.port}/14", "--sink-max-connections",
                            "1", "--sink-connect-timeout-seconds", timeout)
    finally:
        cutter.join(timeout=5)
        proxy.stop()
    return rc, err, proxy, db


@pytest.mark.slow
def test_the_rate_limiters_redis_away_for_a_while_is_waited_for(
        registry_root: str, tmp_path: Path) -> None:
    """Redis (the job's rate limit and connection slots) cut for 6 s mid-run: waited
    for as a database away would be, the run completes, every record once."""
    from tests.data import sqlite_rows

    rc, err, proxy, db = _redis_outage_run(registry_root, tmp_path, 6.0, "60")
    assert proxy.cuts, "Redis was never cut: the run ended before it wrote"
    assert rc == EXIT_OK, err
    assert sqlite_rows(db, "SELECT count(*), count(DISTINCT doc_id) FROM predictions") == [
        (3000, 3000)]


@pytest.mark.slow
def test_the_rate_limiters_redis_away_past_the_timeout_ends_the_run_with_75(
        registry_root: str, tmp_path: Path) -> None:
    rc, err, proxy, _ = _redis_outage_run(registry_root, tmp_path, 60.0, "3")
    assert proxy.cuts
    assert rc == EXIT_TEMPFAIL, err
    line = err.strip().splitlines()[-1]
    assert line.startswith("beamscore: error: database unreachable, retry later (exit 75)")
    assert "Redis" in line and "sink.redis_url" in line
