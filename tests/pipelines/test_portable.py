"""Workers independent of the launcher: the sdist installed in a fresh virtualenv, a job
service and a worker pool started from it in another directory, ``beamscore score``
through PortableRunner (the portable protocol Dataflow's Runner v2 speaks)."""

from __future__ import annotations

import os
import re
import socket
import sqlite3
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ROWS = ("SELECT doc_id, tranche, label, round(score, 9), top_k, position FROM predictions "
        "ORDER BY tranche, doc_id")
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"exited {proc.returncode}"
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise AssertionError(f"nothing listens on {port}")


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv holding beamscore installed from its sdist: every module of
    beamscore comes from the package, none from the checkout. Its dependencies are this
    environment's (a path file), so that the package index is not needed again."""
    base = tmp_path_factory.mktemp("portable")
    subprocess.run([sys.executable, "setup.py", "-q", "sdist", "-d", str(base / "dist")],
                   cwd=REPO, check=True, capture_output=True)
    [sdist] = (base / "dist").glob("beamscore-*.tar.gz")
    env = os.environ | {"PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    subprocess.run(["python3", "-m", "venv", str(base / "venv")], check=True)
    python = str(base / "venv" / "bin" / "python")
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          check=True, capture_output=True, text=True).stdout.strip()
    # A path in a .pth file is added to sys.path without running the .pth files it
    # holds, so the checkout's editable install is not among them.
    Path(site, "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    # --no-compile: modules are byte-compiled as they are imported, not all up front.
    subprocess.run([str(base / "venv" / "bin" / "pip"), "install", "-q", "--no-compile",
                    "--no-deps", str(sdist)],
                   check=True, capture_output=True, env=env, cwd=base)
    return base / "venv"


@pytest.fixture(scope="module")
def work(venv: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    """Sample tranches and a model made with the installed package, and a job service
    and a worker pool started from the virtualenv, in a directory outside the checkout."""
    work = tmp_path_factory.mktemp("outside")
    env = os.environ | {"PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}",
                        "PYTHONPATH": ""}
    env.pop("PYTHONPATH")
    python = str(venv / "bin" / "python")
    where = subprocess.run([python, "-c", "import pipelines; print(pipelines.__file__)"],
                           cwd=work, env=env, capture_output=True, text=True, check=True)
    assert where.stdout.startswith(str(venv)), where.stdout  # not the checkout
    subprocess.run([python, "-m", "landing.samples", "--root", str(work / "var")], cwd=work,
                   env=env, check=True, capture_output=True)
    subprocess.run([str(venv / "bin" / "beamscore"), "train", "--docs",
                    str(work / "var" / "train" / "*.jsonl"), "--name", "demo", "--registry",
                    str(work / "var" / "registry")], cwd=work, env=env, check=True,
                   capture_output=True)
    job_port, pool_port = _free_port(), _free_port()
    services = [
        subprocess.Popen([python, "-m", "apache_beam.runners.portability."
                          "local_job_service_main", "--port", str(job_port)], cwd=work,
                         env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
        subprocess.Popen([python, "-m", "apache_beam.runners.worker.worker_pool_main",
                          "--service_port", str(pool_port)], cwd=work, env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
    ]
    try:
        for port, proc in zip((job_port, pool_port), services):
            _wait_for_port(port, proc)
        yield {"dir": work, "env": env, "job": job_port, "pool": pool_port}
    finally:
        for proc in services:
            proc.terminate()
            proc.wait(timeout=30)


def _score(venv: Path, work: dict[str, object], name: str, *extra: str
           ) -> subprocess.CompletedProcess[str]:
    var = Path(str(work["dir"])) / "var"
    return subprocess.run(
        [str(venv / "bin" / "beamscore"), "score", "--model", "demo", "--from", "2026-01-01",
         "--to", "2026-01-03", "--input-root", str(var / "landing"), "--registry",
         str(var / "registry"), "--db", f"sqlite:///{var / name}.db", "--output-dir",
         str(var / f"out-{name}"), *extra],
        cwd=str(work["dir"]), env=work["env"], capture_output=True, text=True,  # type: ignore[arg-type]
        timeout=600)


def test_portable_workers_score_the_same_rows_as_the_local_engine(
        venv: Path, work: dict[str, object]) -> None:
    portable = _score(venv, work, "portable", "--runner", "PortableRunner",
                      "--job_endpoint", f"localhost:{work['job']}", "--environment_type",
                      "EXTERNAL", "--environment_config", f"localhost:{work['pool']}",
                      "--progress-seconds", "0.3")
    assert portable.returncode == 0, portable.stderr
    # job-wide progress from the launcher, read from the database while the job writes
    assert re.search(r"progress: [\d,]+ of about [\d,]+ documents written \(\d+%\), "
                     r"[\d,]+ docs/s, ETA", portable.stderr), portable.stderr[-2000:]
    assert "status succeeded" in portable.stdout
    assert "model loads 1" in portable.stdout  # one worker, one load: metrics came back
    local = _score(venv, work, "local")
    assert local.returncode == 0, local.stderr
    var = Path(str(work["dir"])) / "var"
    with sqlite3.connect(var / "portable.db") as a, sqlite3.connect(var / "local.db") as b:
        rows = a.execute(ROWS).fetchall()
        assert len(rows) == 9000 and rows == b.execute(ROWS).fetchall()
