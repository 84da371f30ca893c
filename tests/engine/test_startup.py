"""A process's start-up with the garbage collector off, and its objects frozen after.

Each case runs in a fresh interpreter: freezing is process-wide, and the test process's
own objects must stay collectable.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.engine.helpers import fork_workers, in_fresh_python, serving


def test_the_block_runs_without_the_collector_and_its_objects_are_frozen() -> None:
    seen = in_fresh_python("""
        import gc, json
        from engine.startup import start_up
        class Node: pass
        with start_up():
            inside = gc.isenabled()
            kept = [Node() for _ in range(1000)]
            def cycle():
                a, b = Node(), Node(); a.other, b.other = b, a
            cycle()  # garbage made during the block: frozen with the rest, not freed
        after = gc.isenabled()
        frozen = gc.get_freeze_count()
        in_collector = any(o is kept[0] for o in gc.get_objects())
        cycle()  # garbage made afterwards is collected as usual
        print(json.dumps({"inside": inside, "after": after, "frozen": frozen,
                          "in_collector": in_collector, "collected": gc.collect()}))
    """)
    assert seen["inside"] is False and seen["after"] is True
    assert seen["frozen"] >= 1000, "the block's objects moved to the permanent generation"
    assert seen["in_collector"] is False, "frozen objects are skipped by collections"
    assert seen["collected"] >= 2, "a cycle made after the block is still freed"


def test_the_collector_is_restored_as_it_was_also_when_the_block_raises() -> None:
    seen = in_fresh_python("""
        import gc, json
        from engine.startup import start_up
        try:
            with start_up():
                raise KeyError("boom")
        except KeyError:
            pass
        enabled_after_raise = gc.isenabled()
        gc.disable()
        with start_up():
            pass
        print(json.dumps({"enabled_after_raise": enabled_after_raise,
                          "stays_disabled": not gc.isenabled()}))
    """)
    assert seen == {"enabled_after_raise": True, "stays_disabled": True}


def test_only_the_console_script_freezes_its_start_up(tmp_path: Path) -> None:
    """``main`` called by a library leaves the caller's objects alone; the console
    script's start-up (``owns_process``) freezes the command's modules and the ones it
    names in ``preload`` (here the score command's orchestration, imported before its
    handler runs and fails on the missing config)."""
    seen = {}
    for owns in (False, True):
        seen[owns] = in_fresh_python(f"""
            import gc, json, sys
            from pipelines.cli import main
            rc = main(["score", "--from", "2026-01-01", "--to", "2026-01-01",
                       "--config", {str(tmp_path / "missing.yaml")!r}], owns_process={owns})
            from pipelines.orchestration.score import run_parsed
            print(json.dumps({{"rc": rc, "enabled": gc.isenabled(),
                              "frozen": gc.get_freeze_count(),
                              "tracked": any(o is run_parsed for o in gc.get_objects())}}))
        """)
    assert seen[False]["rc"] == seen[True]["rc"] != 0
    assert seen[False]["frozen"] == 0 and seen[False]["tracked"] is True
    assert seen[True]["frozen"] > 10_000 and seen[True]["tracked"] is False
    assert seen[False]["enabled"] is seen[True]["enabled"] is True


def test_a_forked_worker_starts_with_the_collector_on_and_the_preload_frozen(
        tmp_path: Path, monkeypatch) -> None:
    probe = tmp_path / "gc.jsonl"
    monkeypatch.setenv("BEAMSCORE_GC_PROBE", str(probe))
    with serving("tests.engine.gc_probe") as server:
        fork_workers(server)
    events = [json.loads(line) for line in probe.read_text().splitlines()]
    preload = [e for e in events if e["event"] == "preload"]
    forked = [e for e in events if e["event"] == "forked"]
    assert [e["enabled"] for e in preload] == [False], "the preload runs without the collector"
    assert forked, "the zygote forked a worker"
    assert all(e["enabled"] for e in forked), "a worker collects garbage as usual"
    assert all(e["frozen"] > 10_000 for e in forked), "the pre-imported objects are frozen"
