"""Scoring workers run as batch work: SCHED_BATCH and a long slice, the launcher as it was."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from engine.scheduling import SLICE_NS
from tests.engine.helpers import fork_workers, in_fresh_python, serving

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="Linux scheduling policies")


def _takes_slices() -> bool:
    """Whether this kernel honours a slice request (EEVDF's, Linux 6.12 and later)."""
    major, minor = (int(x) for x in os.uname().release.split(".")[:2])
    return (major, minor) >= (6, 12)


def test_batch_policy_makes_the_process_batch_work_with_the_long_slice() -> None:
    seen = in_fresh_python("""
        import json, os
        from engine.scheduling import batch_policy, slice_request
        before = (os.sched_getscheduler(0), slice_request())
        done = batch_policy()
        print(json.dumps({"before": before, "done": done,
                          "policy": os.sched_getscheduler(0), "slice": slice_request()}))
        """)
    assert seen["before"][0] == os.SCHED_OTHER and seen["before"][1] != SLICE_NS
    assert seen["done"] is True
    assert seen["policy"] == os.SCHED_BATCH
    if _takes_slices():
        assert seen["slice"] == SLICE_NS


def test_without_the_slice_call_the_policy_is_still_batch() -> None:
    seen = in_fresh_python("""
        import json, os
        from engine import scheduling
        scheduling._set_attr = lambda policy, slice_ns: False  # an older kernel, another arch
        print(json.dumps({"done": scheduling.batch_policy(),
                          "policy": os.sched_getscheduler(0)}))
        """)
    assert seen == {"done": True, "policy": os.SCHED_BATCH}


def test_a_refused_policy_changes_nothing_and_raises_nothing() -> None:
    seen = in_fresh_python("""
        import json, os
        from engine import scheduling
        scheduling._set_attr = lambda policy, slice_ns: False
        def refuse(*args):
            raise PermissionError(1, "Operation not permitted")
        os.sched_setscheduler = refuse
        print(json.dumps({"done": scheduling.batch_policy(),
                          "policy": os.sched_getscheduler(0)}))
        """)
    assert seen == {"done": False, "policy": os.SCHED_OTHER}


def test_the_zygote_and_its_workers_run_as_batch_work_the_launcher_does_not(
        tmp_path: Path, monkeypatch) -> None:
    probe = tmp_path / "sched.jsonl"
    monkeypatch.setenv("BEAMSCORE_SCHED_PROBE", str(probe))
    with serving("tests.engine.sched_probe") as server:
        zygote_policy = os.sched_getscheduler(server.pid)
        fork_workers(server, 2)
    workers = [json.loads(line) for line in probe.read_text().splitlines()]
    assert len(workers) == 2
    assert zygote_policy == os.SCHED_BATCH
    assert all(w["policy"] == os.SCHED_BATCH for w in workers)
    if _takes_slices():
        assert all(w["slice"] == SLICE_NS for w in workers)
    assert os.sched_getscheduler(0) == os.SCHED_OTHER, "the launcher keeps its policy"
