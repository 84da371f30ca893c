"""One thread of math per process: the console script limits the BLAS and OpenMP pools
before numpy loads, every process it starts inherits that, a number the user set is
kept, and the image sets the same."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from engine.math_threads import VARIABLES, limit_math_threads
from tests.engine.helpers import console_reports, in_fresh_python

ROOT = Path(__file__).resolve().parents[2]
# The math libraries of a process that imported numpy and scikit-learn's estimators:
# [api, threads] of each pool threadpoolctl finds.
_POOLS = ("import json, numpy, sklearn.linear_model, threadpoolctl\n"
          "print(json.dumps(sorted({(i['internal_api'], i['num_threads'])\n"
          "                         for i in threadpoolctl.threadpool_info()})))\n")


# What the console script's command process saw: the variables, the threads of each math
# library's pool, and the variable in a process it started.
_MATH = f"""
import os, subprocess, sys
import numpy, threadpoolctl
child = subprocess.run(
    [sys.executable, "-c", "import os; print(os.environ.get('OMP_NUM_THREADS'))"],
    capture_output=True, text=True)
return {{"env": [os.environ.get(name) for name in {VARIABLES!r}],
        "pools": sorted({{i["num_threads"] for i in threadpoolctl.threadpool_info()}}),
        "child": child.stdout.strip()}}
"""


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in VARIABLES}


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one CPU: every pool has one thread")
def test_every_pool_has_one_thread_once_limited_and_one_per_cpu_otherwise(
        monkeypatch: pytest.MonkeyPatch) -> None:
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    limited = in_fresh_python("from engine.math_threads import limit_math_threads\n"
                              "limit_math_threads()\n" + _POOLS)
    assert limited and {threads for _, threads in limited} == {1}, limited
    assert "openblas" in {api for api, _ in limited} or "mkl" in {api for api, _ in limited}
    default = in_fresh_python(_POOLS)
    assert max(threads for _, threads in default) > 1, "the default is one thread already"


def test_a_number_the_user_set_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in VARIABLES:  # each restored after the test
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "3")
    limit_math_threads()
    assert os.environ["OPENBLAS_NUM_THREADS"] == "3"
    assert os.environ["OMP_NUM_THREADS"] == "1"


def test_the_console_scripts_command_runs_with_one_thread_of_math(tmp_path: Path) -> None:
    """Whether or not the console script runs itself again (glibc's tunables given:
    it does not), the command's process sees the variables and its pools have one
    thread; a process it starts inherits them."""
    for tunables in (None, ""):
        env = _clean_env()
        env.pop("GLIBC_TUNABLES", None)
        if tunables is not None:
            env["GLIBC_TUNABLES"] = tunables
        seen = console_reports(tmp_path, _MATH, ["db", "--help"], env)
        assert seen == [{"env": ["1", "1", "1"], "pools": [1], "child": "1"}]


def test_the_image_sets_the_same_for_dataflow_workers() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    for name in VARIABLES:
        assert re.findall(rf"{name}=(\S+)", dockerfile) == ["1"], name
