"""The rate-limited PostgreSQL sink and the tranche ledger, against the real server.

Each test gets its own database on 127.0.0.1:5432 (dropped afterwards) and runs the
real CLI in-process. Covers: server restart mid-run, ledger skip and --force, duplicate
ids, a row lock held by another session, the connection cap, values the database
rejects, and the global rate limit with two workers.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from landing.samples import make_docs, write_tranche
from models.preprocess import PreprocessConfig, preprocess_texts
from models.recipe import train_and_evaluate
from models.registry import ModelRegistry
from pipelines import cli
from store.backends.postgres import PostgresDialect
from store.database import from_json
from store.schema import PREDICTIONS
from tests.postgres import PG

pytestmark = pytest.mark.postgres

DAY = "2026-02-01"




@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = str(tmp_path_factory.mktemp("registry"))
    docs = list(make_docs(400, seed=3))
    texts = preprocess_texts([d["text"] for d in docs], PreprocessConfig())
    model, metrics = train_and_evaluate(texts, [d["label"] for d in docs])
    ModelRegistry(root).register("pgtest", model, preprocessing=PreprocessConfig().to_dict(),
                                 source="test", metrics=metrics)
    return root


def _landing(tmp: Path, n: int, files: int = 4, extra: list[dict[str, str]] | None = None,
             max_chars: int = 600) -> str:
    root = tmp / "landing"
    docs = list(make_docs(n, seed=11, prefix="pg", max_chars=max_chars))
    per = n // files
    for i in range(files):
        part = docs[i * per:(i + 1) * per] + (extra if extra and i == 0 else [])
        write_tranche(str(root), DAY, part, "jsonl", name=f"part-{i}")
    return str(root)


def _score(url: str, registry: str, landing: str, tmp: Path, *extra: str) -> int:
    return cli.main([
        "score", "--date", DAY, "--input-root", landing, "--registry", registry,
        "--model", "pgtest", "--db", url, "--output-dir", str(tmp / "out"), *extra,
    ])


def _q(url: str, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql, params).fetchall()  # type: ignore[arg-type]


def _last_run(url: str) -> dict[str, Any]:
    rows = _q(url, "SELECT counts, status FROM runs ORDER BY started_at DESC, finished_at DESC "
                   "LIMIT 1")
    data: dict[str, Any] = from_json(rows[0][0])
    data["run_status"] = rows[0][1]
    return data


def _assert_complete(url: str, expected_rows: int) -> dict[str, Any]:
    total, distinct = _q(url, "SELECT count(*), count(DISTINCT (tranche, doc_id, model_name, "
                              "model_version)) FROM predictions")[0]
    assert total == distinct == expected_rows
    run = _last_run(url)
    c = run["tranches"][DAY]
    assert c["read"] == c["written"] + c["dead_lettered"]
    return run


_OVERLAP = 5  # samples (10 ms apart) two connections must share to count as concurrent


class _Sampler(threading.Thread):
    """Polls ``sql`` on ``url`` every ``period`` s and keeps (monotonic time, value)
    pairs; a table that does not exist yet reads as 0."""

    def __init__(self, url: str, sql: str, period: float = 0.05,
                 convert: Callable[[Any], Any] = int):
        super().__init__(daemon=True)
        self.url, self.sql, self.period, self.convert = url, sql, period, convert
        self.samples: list[tuple[float, Any]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self.stop.is_set():
                try:
                    row = conn.execute(self.sql).fetchone()  # type: ignore[arg-type]
                    value = self.convert(row[0] if row else 0)
                except psycopg.errors.UndefinedTable:
                    value = 0
                self.samples.append((time.monotonic(), value))
                time.sleep(self.period)


@pytest.mark.postgres(restarts_server=True)
def test_server_restart_mid_run_completes_without_duplicates(
        pg_url: str, registry: str, tmp_path: Path) -> None:
    if shutil.which("pg_ctlcluster") is None:
        pytest.fail("pg_ctlcluster is needed to restart the server")
    landing = _landing(tmp_path, 8000)
    db = pg_url.rsplit("/", 1)[1]
    restarted = threading.Event()

    def restart_when_writing() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                n = _q(f"{PG}/{db}", "SELECT count(*) FROM predictions")[0][0]
            except psycopg.Error:
                n = 0
            if n > 0:
                version = sorted(os.listdir("/etc/postgresql"))[0]
                subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main",
                                "restart", "-m", "fast"], check=True, timeout=60)
                restarted.set()
                return
            time.sleep(0.05)

    t = threading.Thread(target=restart_when_writing, daemon=True)
    t.start()
    # Throttled so the run is still writing when the server goes down.
    code = _score(pg_url, registry, landing, tmp_path, "--sink-max-rows-per-second", "2000",
                  "--sink-batch-rows", "250")
    t.join(timeout=60)
    assert restarted.is_set(), "the server was not restarted during the run"
    assert code == 0
    run = _assert_complete(pg_url, 8000)
    assert run["tranches"][DAY]["written"] == 8000


def test_second_run_is_skipped_and_force_rewrites_same_rows(
        pg_url: str, registry: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    landing = _landing(tmp_path, 2000)
    assert _score(pg_url, registry, landing, tmp_path) == 0
    first_run = _last_run(pg_url)["run_id"]
    capsys.readouterr()
    assert _score(pg_url, registry, landing, tmp_path) == 0
    assert "skipped" in capsys.readouterr().out
    skipped = _last_run(pg_url)  # the skipped run leaves a trace, and wrote nothing
    assert skipped["run_status"] == "skipped" and skipped["run_id"] != first_run
    assert skipped["plan"][DAY]["decision"] == "skipped"
    assert _q(pg_url, "SELECT DISTINCT run_id FROM predictions") == [(first_run,)]
    assert _score(pg_url, registry, landing, tmp_path, "--force") == 0
    _assert_complete(pg_url, 2000)
    runs = _q(pg_url, "SELECT run_id, counts FROM runs WHERE run_id <> %s AND "
                      "status = 'succeeded'", [first_run])
    assert len(runs) == 1  # exactly one more scoring run: the forced one
    run = from_json(runs[0][1])
    # Every row now carries the forced run's lineage.
    assert _q(pg_url, "SELECT DISTINCT run_id FROM predictions") == [(run["run_id"],)]
    status = _q(pg_url, "SELECT status, run_id FROM tranches")
    assert status == [("completed", run["run_id"])]


def test_changed_input_is_rescored(pg_url: str, registry: str, tmp_path: Path) -> None:
    landing = _landing(tmp_path, 1000)
    assert _score(pg_url, registry, landing, tmp_path) == 0
    write_tranche(landing, DAY, list(make_docs(100, seed=99, prefix="late")), "csv",
                  name="late-arrival")
    assert _score(pg_url, registry, landing, tmp_path) == 0
    _assert_complete(pg_url, 1100)


def test_duplicate_ids_in_one_tranche_give_one_row_per_key(
        pg_url: str, registry: str, tmp_path: Path) -> None:
    dupes = [{"id": "pg-0000001", "text": "refund my invoice charge please", "label": "billing"},
             {"id": "pg-0000001", "text": "my parcel delivery is late", "label": "shipping"}]
    landing = _landing(tmp_path, 1000, extra=dupes)
    assert _score(pg_url, registry, landing, tmp_path) == 0
    run = _assert_complete(pg_url, 1000)  # 1000 distinct ids
    assert run["tranches"][DAY]["read"] == 1002
    assert run["tranches"][DAY]["dead_lettered"] == 2
    # The first occurrence (line 2 of part-0) is the row; the two later ones dead letters.
    assert _q(pg_url, "SELECT source_file, position FROM predictions WHERE doc_id = "
                      "'pg-0000001'") == [(f"{landing}/dt={DAY}/part-0.jsonl", 2)]
    dead = _q(pg_url, "SELECT stage, reason FROM dead_letters ORDER BY position")
    assert [d[0] for d in dead] == ["dedupe", "dedupe"]
    assert all(d[1] == f"duplicate id in tranche: first at {landing}/dt={DAY}/part-0.jsonl "
                       "position 2" for d in dead)


class _LockHolder(threading.Thread):
    """Holds ``locker``'s row lock until a session of ``db`` has waited on it longer than
    ``statement_timeout`` (so at least one of its statements timed out), and for at least
    ``minimum`` seconds; then rolls back. However slow the run is to reach the sink."""

    def __init__(self, locker: psycopg.Connection[Any], db: str, statement_timeout: float,
                 minimum: float):
        super().__init__(daemon=True)
        self.locker, self.db = locker, db
        self.statement_timeout, self.minimum = statement_timeout, minimum
        self.waited = threading.Event()
        self.released_at = 0.0

    def run(self) -> None:
        started = time.monotonic()
        deadline = started + 120
        with psycopg.connect(f"{PG}/test", autocommit=True) as conn:
            while not self.waited.is_set() and time.monotonic() < deadline:
                [(blocked,)] = conn.execute(
                    "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                    "WHERE NOT l.granted AND a.datname = %s", [self.db]).fetchall()
                if blocked:
                    self.waited.set()
                else:
                    time.sleep(0.02)
        if self.waited.is_set():
            time.sleep(self.statement_timeout + 0.5)
        time.sleep(max(0.0, started + self.minimum - time.monotonic()))
        self.released_at = time.monotonic()
        self.locker.rollback()


def test_row_lock_times_out_retries_and_succeeds(
        pg_url: str, registry: str, tmp_path: Path) -> None:
    landing = _landing(tmp_path, 1000)
    assert _score(pg_url, registry, landing, tmp_path) == 0
    locker = psycopg.connect(pg_url)
    locker.execute("SELECT * FROM predictions WHERE doc_id = 'pg-0000001' FOR UPDATE")
    holder = _LockHolder(locker, pg_url.rsplit("/", 1)[1], statement_timeout=0.5, minimum=3.0)
    holder.start()
    started = time.monotonic()
    code = _score(pg_url, registry, landing, tmp_path, "--force",
                  "--sink-statement-timeout-ms", "500")
    finished = time.monotonic()
    holder.join(timeout=130)
    locker.close()
    assert holder.waited.is_set(), "the sink never waited on the locked row"
    assert code == 0
    run = _assert_complete(pg_url, 1000)
    # It waited for the lock rather than failing or skipping rows.
    assert finished - started >= 3.0 and finished >= holder.released_at
    assert run["total"].get("throttled_ms", 0) > 0  # backoff time was counted


def test_connection_cap_is_never_exceeded(pg_url: str, registry: str, tmp_path: Path) -> None:
    """At most ``--sink-max-connections`` sink connections at a time. A connection its
    client has closed can stay in ``pg_stat_activity`` for a moment while its server
    process exits, as the next holder of the slot connects: two connections count as
    concurrent when both are seen in every one of ``_OVERLAP`` consecutive samples."""
    landing = _landing(tmp_path, 6000, files=4)
    db = pg_url.rsplit("/", 1)[1]
    # Sampled from the shared "test" database, so the sampler is not counted itself.
    sampler = _Sampler(f"{PG}/test", "SELECT array_agg(pid) FROM pg_stat_activity WHERE "
                                     f"datname = '{db}' AND application_name = 'beamscore'",
                       period=0.01, convert=lambda pids: frozenset(pids or ()))
    sampler.start()
    code = _score(pg_url, registry, landing, tmp_path, "--workers", "2",
                  "--sink-max-connections", "1", "--sink-batch-rows", "200")
    sampler.stop.set()
    sampler.join()
    assert code == 0
    _assert_complete(pg_url, 6000)
    seen = [pids for _, pids in sampler.samples]
    assert max(map(len, seen)) >= 1, "the sampler never saw the sink connected"
    held = [frozenset.intersection(*seen[i:i + _OVERLAP])
            for i in range(len(seen) - _OVERLAP + 1)]
    assert max(map(len, held)) <= 1


def test_values_the_database_rejects_are_dead_lettered(
        pg_url: str, registry: str, tmp_path: Path) -> None:
    # A stricter table than beamscore's own: labels longer than 8 characters ("technical",
    # "shipping" fits) violate it with SQLSTATE 22001.
    with psycopg.connect(pg_url, autocommit=True) as conn:
        create = PostgresDialect().ddl(PREDICTIONS)[0]
        strict = create.replace("label TEXT NOT NULL", "label VARCHAR(8) NOT NULL")
        conn.execute(strict)  # type: ignore[arg-type]
    landing = _landing(tmp_path, 1000)
    assert _score(pg_url, registry, landing, tmp_path, "--max-dead-letter-ratio", "1") == 0
    run = _last_run(pg_url)
    c = run["tranches"][DAY]
    rejected = _q(pg_url, "SELECT count(*), min(reason) FROM dead_letters WHERE stage = 'sink'")
    written = _q(pg_url, "SELECT count(*) FROM predictions")[0][0]
    assert rejected[0][0] > 0
    assert "value too long" in rejected[0][1]
    assert written + rejected[0][0] == 1000 == c["written"] + c["dead_lettered"]
    assert _q(pg_url, "SELECT count(*) FROM predictions WHERE label = 'technical'") == [(0,)]


@pytest.mark.parametrize("shared", ["machine", "redis"])
def test_global_rate_limit_with_two_workers(pg_url: str, registry: str, tmp_path: Path,
                                            shared: str) -> None:
    """The budget kept in the machine's file, or in Redis for the whole job (there with
    one connection slot, so that writes queue for it after booking)."""
    rate, batch = 2000, 200
    redis = (["--sink-redis-url", "redis://127.0.0.1:6379/15", "--sink-max-connections", "1"]
             if shared == "redis" else [])
    # Short documents: scoring must outpace the limit so that the limiter is what's measured.
    landing = _landing(tmp_path, 12000, files=4, max_chars=150)
    sampler = _Sampler(pg_url, "SELECT count(*) FROM predictions", period=0.02)
    sampler.start()
    code = _score(pg_url, registry, landing, tmp_path, "--workers", "2",
                  "--sink-max-rows-per-second", str(rate), "--sink-batch-rows", str(batch),
                  *redis)
    sampler.stop.set()
    sampler.join()
    assert code == 0
    _assert_complete(pg_url, 12000)
    samples = [(t, v) for t, v in sampler.samples]
    first = next(t for t, v in samples if v > 0)
    last = next(t for t, v in samples if v == 12000)
    worst = 0
    for i, (t0, v0) in enumerate(samples):
        later = [v for t, v in samples[i:] if t - t0 <= 1.0]
        worst = max(worst, later[-1] - v0)
    average = 12000 / (last - first + 0.02)
    print(f"rate limit R={rate} ({shared}): worst 1-s window {worst} rows, "
          f"average {average:.0f} rows/s")
    assert worst <= rate + batch, f"{worst} rows in one second"
    assert average >= 0.8 * rate, f"average {average:.0f} rows/s"
