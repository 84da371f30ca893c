"""Shared fixtures: a Beam test pipeline on the local engine, a tiny trained model with
a registry holding it, and a private PostgreSQL database a test.

Beam's plain DirectRunner would try to download Prism (no network here), so every
pipeline in the suite runs on ``FnApiRunner``, the engine the CLI's configs select.

A test that uses ``pg_url`` is marked ``postgres``. A postgres test holds the server's
lock (``tests.postgres.server_lock``): shared, or exclusive where it is marked
``postgres(restarts_server=True)``, so that xdist workers and other runs on the host
never use the server while a test restarts it. When the server cannot be reached the
postgres tests are skipped with one message, and the session fails: deselect them
(``-m 'not postgres'``) to run without it. Under pytest-xdist every worker hands out
the ``slow`` tests first, so that the longest ones do not end a run alone.

Property tests run under one hypothesis profile without time limits: what they check
never depends on how fast the machine is, and a loaded CI machine must not fail them
(a draw or an example slowed by the other xdist worker is not a finding).
"""

from __future__ import annotations

# isort: off
import engine  # noqa: F401 - first, as the entries: gRPC's fork support off (see engine)
# isort: on
import os
import shutil
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from hypothesis import HealthCheck, settings

from landing.samples import make_docs
from models.preprocess import PreprocessConfig, preprocess_texts
from models.recipe import train_and_evaluate
from models.registry import ModelRef, ModelRegistry
from tests.postgres import PG, UNREACHABLE, pg_admin, server_lock, unreachable

settings.register_profile("beamscore", settings.default, deadline=None,  # on CI: its profile
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("beamscore")

MODEL_NAME = "demo"


@pytest.fixture
def pipeline() -> TestPipeline:
    """A fresh blocking TestPipeline on FnApiRunner (use once, as a context manager)."""
    return TestPipeline(runner="FnApiRunner")


@pytest.fixture(scope="session")
def preprocessing() -> PreprocessConfig:
    return PreprocessConfig()


@pytest.fixture(scope="session")
def trained_model(preprocessing: PreprocessConfig) -> Any:
    """TF-IDF + logistic regression fitted on 300 synthetic documents (well under 1 s)."""
    docs = list(make_docs(300, seed=1, prefix="train"))
    texts = preprocess_texts([d["text"] for d in docs], preprocessing)
    model, _ = train_and_evaluate(texts, [d["label"] for d in docs])
    return model


@pytest.fixture(scope="session")
def registry_root(tmp_path_factory: pytest.TempPathFactory, trained_model: Any,
                  preprocessing: PreprocessConfig) -> str:
    """A registry with ``demo`` version 1 = ``trained_model``. Never modify it in a test:
    use ``registry_copy`` for that."""
    root = tmp_path_factory.mktemp("registry")
    ModelRegistry(str(root)).register(
        MODEL_NAME, trained_model, preprocessing=preprocessing.to_dict(), source="conftest",
        metrics={"accuracy": 1.0},
    )
    return str(root)


@pytest.fixture(scope="session")
def model_ref(registry_root: str) -> ModelRef:
    return ModelRegistry(registry_root).resolve(MODEL_NAME)


@pytest.fixture
def registry_copy(registry_root: str, tmp_path: Any) -> str:
    """A private copy of the session registry that a test may tamper with."""
    dest = tmp_path / "registry"
    shutil.copytree(registry_root, dest)
    return str(dest)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test that uses ``pg_url`` ``postgres`` (before ``-m`` selects); under
    xdist, put the slow tests first."""
    for item in items:
        if "pg_url" in getattr(item, "fixturenames", ()) and not item.get_closest_marker(
                "postgres"):
            item.add_marker(pytest.mark.postgres)
    if hasattr(config, "workerinput"):  # every worker collects, and sorts, the same way
        items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip a postgres test without a server (before its fixtures: one folded line)."""
    if item.get_closest_marker("postgres"):
        with server_lock(exclusive=False):  # not while another test restarts it
            problem = unreachable()
        if problem:
            pytest.skip(problem)


@pytest.fixture(autouse=True)
def _postgres_server(request: pytest.FixtureRequest) -> Iterator[None]:
    """A postgres test runs under the server's lock."""
    mark = request.node.get_closest_marker("postgres")
    if mark is None:
        yield
        return
    with server_lock(exclusive=mark.kwargs.get("restarts_server", False)):
        yield


def _postgres_skips(config: pytest.Config) -> list[pytest.TestReport]:
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    return [r for r in skipped
            if isinstance(r.longrepr, tuple) and UNREACHABLE in str(r.longrepr[2])]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A run that selected postgres tests without a server fails (once, see the summary)."""
    if not hasattr(session.config, "workerinput") and _postgres_skips(session.config) \
            and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    if skips := _postgres_skips(config):
        terminalreporter.write_line(f"this run fails: {len(skips)} postgres tests were skipped "
                                    "(why, and how to start the server: below)",
                                    red=True, bold=True)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    """A fresh database of each backend: a SQLite file, then a PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 's.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database on the local server, dropped after the test."""
    try:
        admin = pg_admin()
    except psycopg.OperationalError as exc:  # pragma: no cover - checked at setup
        pytest.fail(f"{UNREACHABLE} {PG}: {exc}")
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    name = f"beamscore_test_{worker}_{uuid.uuid4().hex[:12]}"
    admin.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
    admin.close()
    yield f"{PG}/{name}"
    with pg_admin() as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", [name])
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')  # type: ignore[arg-type]

