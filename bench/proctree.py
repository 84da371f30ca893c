"""Process-tree sampling from /proc: what a contender's whole tree of processes costs.

``run_measured`` starts a command in a session of its own and, until it exits or times
out, samples every process in that tree (its descendants and anything left in its session
after reparenting) for RSS, PSS and CPU clock ticks; it returns a ``Measurement`` with the
wall time, the peaks, the tree's CPU seconds and how busy the rest of the machine was
meanwhile. Linux only.
"""

from __future__ import annotations

import os
import resource
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass, field


def _stat(pid: str) -> tuple[int, int, int, int] | None:
    """(ppid, session id, user+system clock ticks, start time) of a process, or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            rest = fh.read().rsplit(b")", 1)[1].split()
        return int(rest[1]), int(rest[3]), int(rest[11]) + int(rest[12]), int(rest[19])
    except (OSError, IndexError, ValueError):
        return None


def process_tree(root: int) -> dict[int, tuple[int, int, int, int]]:
    """``root``, its descendants and anything left in its session (reparented): pid -> stat."""
    table: dict[int, tuple[int, int, int, int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = _stat(name)
            if st is not None:
                table[int(name)] = st
    children: dict[int, list[int]] = {}
    for pid, st in table.items():
        children.setdefault(st[0], []).append(pid)
    found = {root}
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    found.update(pid for pid, st in table.items() if st[1] == root)
    return {p: table[p] for p in sorted(found) if p in table}


def tree_pids(root: int) -> list[int]:
    return list(process_tree(root))


def _status_kib(pid: int, filename: str, key: bytes) -> int:
    try:
        with open(f"/proc/{pid}/{filename}", "rb") as fh:
            for line in fh:
                if line.startswith(key):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


@dataclass
class TreeSample:
    peak_rss_kib: int = 0
    peak_pss_kib: int = 0
    peak_single_rss_kib: int = 0
    max_procs: int = 0
    samples: int = 0
    # CPU clock ticks last seen per (pid, start time): a lower bound of the tree's CPU
    # that also counts processes nobody waited for (rusage misses those).
    ticks: dict[tuple[int, int], int] = field(default_factory=dict)

    @property
    def sampled_cpu(self) -> float:
        return sum(self.ticks.values()) / os.sysconf("SC_CLK_TCK")

    def take(self, root: int, with_pss: bool) -> None:
        tree = process_tree(root)
        for pid, st in tree.items():
            self.ticks[(pid, st[3])] = st[2]
        pids = list(tree)
        rss = [_status_kib(p, "status", b"VmRSS:") for p in pids]
        self.peak_rss_kib = max(self.peak_rss_kib, sum(rss))
        self.peak_single_rss_kib = max([self.peak_single_rss_kib, *rss])
        self.max_procs = max(self.max_procs, sum(1 for r in rss if r))
        if with_pss:  # smaps_rollup walks page tables: not at every sample
            pss = sum(_status_kib(p, "smaps_rollup", b"Pss:") for p in pids)
            self.peak_pss_kib = max(self.peak_pss_kib, pss)
        self.samples += 1


@dataclass
class Measurement:
    rc: int
    wall: float
    tree: TreeSample
    cpu: float  # user+system seconds of the whole (reaped) process tree
    load_before: float  # 1-minute load average when the run started
    other_cpu: float  # CPU seconds used meanwhile by everything else on the machine
    timed_out: bool = False


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _busy_cpu() -> float:
    """Machine-wide busy CPU seconds since boot (all CPUs; idle and iowait excluded)."""
    try:
        with open("/proc/stat", encoding="utf-8") as fh:
            f = [int(x) for x in fh.readline().split()[1:]]
        # user nice system idle iowait irq softirq steal ...
        return (f[0] + f[1] + f[2] + f[5] + f[6] + f[7]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")


def _self_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _loadavg() -> float:
    try:
        with open("/proc/loadavg", encoding="utf-8") as fh:
            return float(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return float("nan")


def _kill_leftovers(root: int) -> None:
    """Anything the contender left behind in its session would distort the next one."""
    for pid in tree_pids(root):
        if pid != root:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def run_measured(cmd: list[str], log_path: str, env: dict[str, str], timeout: float, *,
                 cwd: str, interval: float = 0.2, pss_every: int = 5) -> Measurement:
    """Run ``cmd`` in ``cwd``, in its own session; sample its process tree every
    ``interval`` s.

    Sampling costs the harness CPU that a contender using both cores pays for: every
    0.1 s with PSS every 0.5 s took 0.40 CPU-s during a 9-second 2-worker run and
    lengthened it by ~0.3 s; every 0.2 s with PSS every 1 s takes 0.18 CPU-s.
    """
    tree = TreeSample()
    load_before = _loadavg()
    cpu_before = _children_cpu()
    busy_before, self_before = _busy_cpu(), _self_cpu()
    with open(log_path, "wb") as log:
        log.write(("$ " + shlex.join(cmd) + "\n").encode())
        log.flush()
        started = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                start_new_session=True)
        timed_out = False
        while True:
            tree.take(proc.pid, with_pss=tree.samples % pss_every == 0)
            try:
                rc = proc.wait(timeout=interval)
                break
            except subprocess.TimeoutExpired:
                if time.monotonic() - started > timeout:
                    timed_out = True
                    os.killpg(proc.pid, signal.SIGKILL)  # the session started just above
                    rc = proc.wait()
                    break
        wall = time.monotonic() - started
        busy = _busy_cpu() - busy_before
        harness = _self_cpu() - self_before
    _kill_leftovers(proc.pid)
    # rusage counts reaped descendants only; sampling misses the last 0.2 s of each.
    cpu = max(_children_cpu() - cpu_before, tree.sampled_cpu)
    return Measurement(rc=rc, wall=wall, tree=tree, cpu=cpu, load_before=load_before,
                       other_cpu=max(0.0, busy - cpu - harness), timed_out=timed_out)
