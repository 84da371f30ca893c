"""Benchmark ``beamscore score`` against the plain and stock-Beam ways of doing the same job.

    python bench/run_bench.py [--docs N] [--workers 2] [--out bench/out] [--guard RATIO]
                              [--contenders a,b,b2,c,d] [--keep] [--fresh] [--repeat K]

Generates N synthetic documents (cached per N under ``<out>/cache``), trains one model
with the default recipe, then runs every contender as its own process tree on the same
files and the same model, measuring wall time and the peak summed RSS of the tree.
See bench/README.md. Exit status: 0 ok, 1 guard failed, 2 usage error, 3 a contender
failed or scored a wrong number of documents.
"""

from __future__ import annotations

import argparse
import datetime as dt
import glob
import itertools
import json
import os
import platform
import resource
import shlex
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH_DIR)
DAYS = ("2026-03-01", "2026-03-02")
FILES_PER_TRANCHE = ("jsonl", "jsonl", "jsonl", "parquet")  # mostly JSONL, some Parquet
MODEL_NAME = "bench"
DATA_VERSION = 1  # bump when the generated layout changes: invalidates caches

BEAMSCORE_CONTENDERS = ("c", "c0", "c1")  # run `beamscore score`, checked the same way
CONTENDERS = {  # short names for the table, then what each one writes
    "a": ("plain pandas+sklearn, 1 process",
          "read_json/read_parquet, preprocess_texts, predict_proba in chunks; "
          "Parquet per file + SQLite executemany, one transaction"),
    "b": ("stock Beam RunInference, 1 worker",
          "FnApiRunner in_memory; ReadFromText/ReadFromParquet, element-wise Maps, "
          "KeyedModelHandler(SklearnModelHandlerNumpy); WriteToText JSONL (no DB)"),
    "b2": ("stock Beam RunInference, {w} workers",
           "as b on FnApiRunner multi_processing, direct_num_workers={w}"),
    "c": ("beamscore score, {w} workers",
          "the product end to end: Parquet + SQLite upserts (top-3, lineage), "
          "dead letters, run record"),
    "c1": ("beamscore score, 1 worker",
           "as c with --workers 1 (for the scaling ratio c/c1)"),
    "c0": ("beamscore, {w} workers, sklearn featuriser",
           "as c with inference.fast_text_features=false (scikit-learn's own transform)"),
    "d": ("plain script, ProcessPool {w} procs",
          "a's per-file function over ProcessPoolExecutor({w}); Parquet per file + "
          "one SQLite in WAL mode"),
}


# ------------------------------------------------------------------ data and model
def prepare_inputs(out: str, n_docs: int, seed: int, train_docs: int, fresh: bool,
                   chars: tuple[int, int] = (100, 600)) -> dict[str, Any]:
    """Generate the tranches and train/register the model once per (N, seed, train docs,
    document lengths)."""
    key = f"docs-{n_docs}-seed{seed}-train{train_docs}-v{DATA_VERSION}"
    key += f"-chars{chars[0]}-{chars[1]}"
    cache = os.path.join(out, "cache", key)
    manifest_path = os.path.join(cache, "manifest.json")
    if os.path.exists(manifest_path) and not fresh:
        with open(manifest_path, encoding="utf-8") as fh:
            manifest: dict[str, Any] = json.load(fh)
        if all(os.path.exists(f["path"]) for f in manifest["files"]) and os.path.exists(
                manifest["model_path"]):
            print(f"reusing generated data and model in {cache}")
            manifest["reused"] = True
            return manifest
    shutil.rmtree(cache, ignore_errors=True)
    os.makedirs(cache)

    from models.recipe import train_and_evaluate
    from models.registry import ModelRegistry
    from pipelines.samples import make_docs, write_tranche
    from transforms.preprocess import PreprocessConfig, preprocess_texts

    started = time.monotonic()
    landing = os.path.join(cache, "landing")
    n_files = len(DAYS) * len(FILES_PER_TRANCHE)
    sizes = [n_docs // n_files + (1 if i < n_docs % n_files else 0) for i in range(n_files)]
    docs = make_docs(n_docs, seed=seed, min_chars=chars[0], max_chars=chars[1])
    files = []
    k = 0
    for day in DAYS:
        for j, fmt in enumerate(FILES_PER_TRANCHE):
            batch = list(itertools.islice(docs, sizes[k]))
            k += 1
            path = write_tranche(landing, day, batch, fmt, name=f"part-{j}")
            files.append({"tranche": day, "path": os.path.abspath(path), "format": fmt,
                          "size": os.path.getsize(path), "docs": len(batch)})
    gen_seconds = time.monotonic() - started
    print(f"generated {n_docs:,} documents in {len(files)} files "
          f"({sum(f['size'] for f in files) / 2**20:,.0f} MiB) in {gen_seconds:.1f}s")

    started = time.monotonic()
    tdocs = list(make_docs(train_docs, seed=seed + 1, min_chars=chars[0], max_chars=chars[1],
                           prefix="train"))
    pre = PreprocessConfig()
    texts = preprocess_texts([d["text"] for d in tdocs], pre)
    model, metrics = train_and_evaluate(texts, [d["label"] for d in tdocs])
    registry = os.path.join(cache, "registry")
    ref = ModelRegistry(registry).register(MODEL_NAME, model, preprocessing=pre.to_dict(),
                                           source="bench", metrics=metrics)
    train_seconds = time.monotonic() - started
    print(f"trained {MODEL_NAME}:{ref.version} on {train_docs:,} documents in "
          f"{train_seconds:.1f}s: accuracy {metrics['accuracy']}, macro F1 {metrics['macro_f1']}")

    manifest = {
        "n_docs": n_docs, "seed": seed, "train_docs": train_docs, "dates": list(DAYS),
        "input_root": os.path.abspath(landing), "files": files,
        "registry": os.path.abspath(registry), "model_name": MODEL_NAME,
        "model_version": ref.version, "sha256": ref.sha256,
        "model_path": os.path.abspath(os.path.join(registry, MODEL_NAME, ref.version,
                                                   "model.joblib")),
        "classes": ref.metadata["classes"], "metrics": metrics,
        "generate_seconds": round(gen_seconds, 1), "train_seconds": round(train_seconds, 1),
    }
    tmp = manifest_path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(manifest, fh, indent=2)
    os.replace(tmp, manifest_path)
    manifest["reused"] = False
    return manifest


# ------------------------------------------------------------------ process-tree memory
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


def run_measured(cmd: list[str], log_path: str, env: dict[str, str], timeout: float,
                 interval: float = 0.2, pss_every: int = 5) -> Measurement:
    """Run ``cmd`` in its own session; sample its process tree every ``interval`` s.

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
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO,
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
    # Anything the contender left behind in its session would distort the next one.
    for pid in tree_pids(proc.pid):
        if pid != proc.pid:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    # rusage counts reaped descendants only; sampling misses the last 0.2 s of each.
    cpu = max(_children_cpu() - cpu_before, tree.sampled_cpu)
    return Measurement(rc=rc, wall=wall, tree=tree, cpu=cpu, load_before=load_before,
                       other_cpu=max(0.0, busy - cpu - harness), timed_out=timed_out)


# ------------------------------------------------------------------ contenders
def contender_command(name: str, manifest: dict[str, Any], manifest_path: str, run_dir: str,
                      workers: int) -> list[str]:
    py = sys.executable
    baselines = os.path.join(BENCH_DIR, "baselines.py")
    common = ["--manifest", manifest_path, "--out", run_dir]
    if name == "a":
        return [py, baselines, "plain", *common]
    if name == "b":
        return [py, baselines, "beam", *common, "--workers", "1"]
    if name == "b2":
        return [py, baselines, "beam", *common, "--workers", str(workers)]
    if name == "d":
        return [py, baselines, "pool", *common, "--workers", str(workers)]
    if name in BEAMSCORE_CONTENDERS:
        exe = os.path.join(os.path.dirname(py), "beamscore")
        prefix = [exe] if os.path.exists(exe) else [py, "-m", "pipelines.cli"]
        return [*prefix, "score", "--from", manifest["dates"][0], "--to", manifest["dates"][-1],
                "--input-root", manifest["input_root"], "--registry", manifest["registry"],
                "--model", manifest["model_name"],
                "--db", "sqlite:///" + os.path.join(run_dir, "beamscore.db"),
                "--output-dir", os.path.join(run_dir, "output"),
                "--workers", "1" if name == "c1" else str(workers),
                "--inference-fast-text-features", "false" if name == "c0" else "true"]
    raise ValueError(name)


def _read_parquets(paths: list[str], columns: list[str]) -> Any:
    import pandas as pd
    import pyarrow.parquet as pq

    frames = [pq.read_table(p, columns=columns).to_pandas() for p in paths]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


def _sqlite_count(path: str, table: str = "predictions") -> int | None:
    if not os.path.exists(path):
        return None
    db = sqlite3.connect(path)
    try:
        return int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    except sqlite3.Error:
        return None
    finally:
        db.close()


def collect_outputs(name: str, run_dir: str,
                    manifest: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """(DataFrame doc_id/label/score of everything written, facts about the outputs)."""
    import pandas as pd

    facts: dict[str, Any] = {}
    if name in ("a", "d"):
        frame = _read_parquets(sorted(glob.glob(os.path.join(run_dir, "dt=*", "*.parquet"))),
                               ["doc_id", "label", "score"])
        facts["db_rows"] = _sqlite_count(os.path.join(run_dir, "predictions.db"))
    elif name in ("b", "b2"):
        sys.path.insert(0, BENCH_DIR)
        from baselines import iter_beam_output

        rows = list(iter_beam_output(run_dir))
        frame = pd.DataFrame(rows, columns=["id", "label", "score"]).rename(
            columns={"id": "doc_id"})
    else:
        out = os.path.join(run_dir, "output")
        files = sorted(glob.glob(os.path.join(out, "dt=*", "predictions-*.parquet")))
        frame = _read_parquets(files, ["doc_id", "label", "score"])
        facts["parquet_files"] = len(files)
        facts["db_rows"] = _sqlite_count(os.path.join(run_dir, "beamscore.db"))
        facts["db_dead_letters"] = _sqlite_count(os.path.join(run_dir, "beamscore.db"),
                                                 "dead_letters")
        facts["dead_letter_files"] = len(glob.glob(os.path.join(out, "dt=*", "dead_letters-*")))
        runs = sorted(glob.glob(os.path.join(out, "_runs", "*.json")))
        if runs:
            with open(runs[-1], encoding="utf-8") as fh:
                summary = json.load(fh)
            facts["run_summary"] = {"status": summary.get("status"),
                                    "total": summary.get("total"),
                                    "tranches": summary.get("tranches")}
    facts["rows"] = len(frame)
    facts["unique_ids"] = int(frame["doc_id"].nunique())
    return frame, facts


def _product_wall(log_path: str) -> float | None:
    """The ``wall time 12.3s`` line that ``beamscore score`` prints (pipeline only)."""
    try:
        with open(log_path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("wall time "):
                    return float(line.split()[2].rstrip("s"))
    except (OSError, ValueError, IndexError):
        pass
    return None


def _tail(path: str, n: int = 15) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return "".join(fh.readlines()[-n:])
    except OSError:
        return ""


@dataclass
class Result:
    name: str
    description: str
    command: str
    walls: list[float] = field(default_factory=list)
    cpus: list[float] = field(default_factory=list)
    loads: list[float] = field(default_factory=list)
    others: list[float] = field(default_factory=list)  # share of all CPUs used by others
    rcs: list[int] = field(default_factory=list)
    peak_rss_mib: float = 0.0
    peak_pss_mib: float = 0.0
    peak_single_rss_mib: float = 0.0
    max_procs: int = 0
    scored: int = 0
    checks: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    product_wall: float | None = None
    log: str = ""

    @property
    def wall(self) -> float:
        return statistics.median(self.walls) if self.walls else float("nan")

    @property
    def cpu(self) -> float:
        return statistics.median(self.cpus) if self.cpus else float("nan")

    @property
    def rate(self) -> float:
        return self.scored / self.wall if self.walls and self.wall > 0 else 0.0

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(res: Result, frame: Any, facts: dict[str, Any], n_docs: int) -> None:
    res.scored = facts["unique_ids"]
    res.checks.update(facts)
    if facts["rows"] != n_docs or facts["unique_ids"] != n_docs:
        res.problems.append(f"scored {facts['unique_ids']:,} distinct documents in "
                            f"{facts['rows']:,} output rows, expected {n_docs:,}")
    if "db_rows" in facts and facts["db_rows"] != n_docs:
        res.problems.append(f"database holds {facts['db_rows']} prediction rows, "
                            f"expected {n_docs:,}")
    summary = facts.get("run_summary")
    if res.name in BEAMSCORE_CONTENDERS:
        if summary is None:
            res.problems.append("no run summary in <output>/_runs")
        else:
            total = summary.get("total") or {}
            if summary.get("status") != "succeeded":
                res.problems.append(f"run status {summary.get('status')!r}")
            for key in ("read", "valid", "scored", "written"):
                if total.get(key) != n_docs:
                    res.problems.append(f"run summary says {key}={total.get(key)}, "
                                        f"expected {n_docs:,}")
            if total.get("dead_lettered"):
                res.problems.append(f"{total['dead_lettered']} dead letters on all-valid input")


def compare_labels(frames: dict[str, Any], reference: str) -> dict[str, dict[str, Any]]:
    """Label agreement of every contender with ``reference`` (same model, same input)."""
    ref = frames[reference].drop_duplicates("doc_id").set_index("doc_id")
    out = {}
    for name, frame in frames.items():
        if name == reference:
            continue
        other = frame.drop_duplicates("doc_id").set_index("doc_id")
        joined = ref.merge(other, how="inner", left_index=True, right_index=True,
                           suffixes=("_ref", ""))
        out[name] = {
            "compared": len(joined),
            "label_differs": int((joined["label"] != joined["label_ref"]).sum()),
            "max_score_diff": float((joined["score"] - joined["score_ref"]).abs().max())
            if len(joined) else 0.0,
        }
    return out


# ------------------------------------------------------------------ reporting
def ratio(results: dict[str, Result], num: str, den: str) -> float | None:
    a, b = results.get(num), results.get(den)
    if not a or not b or not a.walls or not b.walls or not a.rate or not b.rate:
        return None
    return a.rate / b.rate


def format_table(results: dict[str, Result]) -> str:
    head = (f"{'':<3}{'contender':<40}{'docs':>9}{'wall s':>8}{'docs/s':>8}{'CPU s':>8}"
            f"{'docs/CPUs':>10}{'RSS MiB':>9}{'PSS MiB':>9}{'max1 MiB':>9}{'procs':>6}"
            f"{'other':>6}  check")
    lines = [head, "-" * len(head)]
    for name, r in results.items():
        check = "ok" if r.ok else "MISMATCH"
        per_cpu = r.scored / r.cpu if r.cpus and r.cpu > 0 else 0.0
        lines.append(f"{name:<3}{r.description[:39]:<40}{r.scored:>9,}{r.wall:>8.1f}"
                     f"{r.rate:>8,.0f}{r.cpu:>8.1f}{per_cpu:>10,.0f}{r.peak_rss_mib:>9,.0f}"
                     f"{r.peak_pss_mib:>9,.0f}{r.peak_single_rss_mib:>9,.0f}{r.max_procs:>6}"
                     f"{max(r.others, default=0):>6.0%}  {check}")
    return "\n".join(lines)


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {"cpus": os.cpu_count(), "python": platform.python_version(),
                            "platform": platform.platform()}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            info["cpu"] = next((ln.split(":", 1)[1].strip() for ln in fh
                                if ln.startswith("model name")), "")
        with open("/proc/loadavg", encoding="utf-8") as fh:
            info["loadavg_at_start"] = fh.read().split()[:3]
    except OSError:
        pass
    for mod in ("apache_beam", "sklearn", "pandas", "pyarrow", "numpy"):
        try:
            info[mod] = __import__(mod).__version__
        except ImportError:
            pass
    return info


# ------------------------------------------------------------------ main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=200_000, help="documents to score")
    ap.add_argument("--workers", type=int, default=2, help="processes for b2, c and d")
    ap.add_argument("--out", default=os.path.join(BENCH_DIR, "out"),
                    help="cache, contender outputs and results.json")
    ap.add_argument("--guard", type=float, default=None, metavar="RATIO",
                    help="exit 1 when docs/s of c divided by docs/s of a is below RATIO")
    ap.add_argument("--contenders", default="a,b,b2,c0,c,d",
                    help="comma-separated, run in this order (a, b, b2, c0, c, d)")
    ap.add_argument("--keep", action="store_true",
                    help="keep each contender's outputs (predictions, databases) under "
                         "<out>/runs; the generated data and model are always cached")
    ap.add_argument("--fresh", action="store_true", help="regenerate data and retrain")
    ap.add_argument("--repeat", type=int, default=1,
                    help="rounds over all contenders (interleaved); median wall is reported")
    ap.add_argument("--train-docs", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--min-chars", type=int, default=100, help="shortest document")
    ap.add_argument("--max-chars", type=int, default=600,
                    help="longest document (lengths uniform in min..max; the issue's "
                         "workload is 'a few hundred characters')")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per contender run")
    args = ap.parse_args(argv)
    names = [c.strip() for c in args.contenders.split(",") if c.strip()]
    unknown = [c for c in names if c not in CONTENDERS]
    if unknown or not names or len(set(names)) != len(names):
        ap.error(f"--contenders: expected distinct names from {','.join(CONTENDERS)}")
    if args.guard is not None and not {"a", "c"} <= set(names):
        ap.error("--guard needs contenders a and c")
    if args.docs < args.train_docs // 10 or args.docs < 100:
        ap.error("--docs too small")
    if args.workers < 1 or args.repeat < 1:
        ap.error("--workers and --repeat must be >= 1")
    args.names = names
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t0 = time.monotonic()
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    info = machine_info()
    print(f"beamscore bench: {args.docs:,} docs, workers={args.workers}, "
          f"contenders={','.join(args.names)}, repeat={args.repeat}; "
          f"{info.get('cpus')} CPU(s) {info.get('cpu', '')}, load {info.get('loadavg_at_start')}")
    manifest = prepare_inputs(out, args.docs, args.seed, args.train_docs, args.fresh,
                              chars=(args.min_chars, args.max_chars))
    manifest_path = os.path.join(os.path.dirname(manifest["input_root"]), "manifest.json")
    prepared = time.monotonic() - t0

    # Same page-cache state for everyone: read every input once before the first run.
    for f in manifest["files"]:
        with open(f["path"], "rb") as fh:
            while fh.read(16 << 20):
                pass

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [BENCH_DIR, REPO] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    runs_root = os.path.join(out, "runs")
    results: dict[str, Result] = {}
    frames: dict[str, Any] = {}
    for rnd in range(args.repeat):
        for name in args.names:
            run_dir = os.path.join(runs_root, name)
            shutil.rmtree(run_dir, ignore_errors=True)
            os.makedirs(run_dir)
            cmd = contender_command(name, manifest, manifest_path, run_dir, args.workers)
            short = CONTENDERS[name][0].format(w=args.workers)
            res = results.setdefault(name, Result(name, short, shlex.join(cmd)))
            log = os.path.join(out, f"{name}.log")
            res.log = log
            print(f"[round {rnd + 1}/{args.repeat}] {name}: {short} ...", flush=True)
            m = run_measured(cmd, log, env, args.timeout)
            res.walls.append(m.wall)
            res.cpus.append(m.cpu)
            res.loads.append(m.load_before)
            cpus = os.cpu_count() or 1
            res.others.append(m.other_cpu / (m.wall * cpus) if m.wall > 0 else 0.0)
            res.rcs.append(m.rc)
            res.peak_rss_mib = max(res.peak_rss_mib, m.tree.peak_rss_kib / 1024)
            res.peak_pss_mib = max(res.peak_pss_mib, m.tree.peak_pss_kib / 1024)
            res.peak_single_rss_mib = max(res.peak_single_rss_mib,
                                          m.tree.peak_single_rss_kib / 1024)
            res.max_procs = max(res.max_procs, m.tree.max_procs)
            if name in BEAMSCORE_CONTENDERS:
                res.product_wall = _product_wall(log)
            print(f"    exit {m.rc}, {m.wall:.1f}s wall, {m.cpu:.1f}s CPU, peak RSS "
                  f"{m.tree.peak_rss_kib / 1024:,.0f} MiB over {m.tree.max_procs} process(es); "
                  f"other jobs used {res.others[-1]:.0%} of the machine", flush=True)
            if m.rc != 0:
                why = "timed out" if m.timed_out else f"exited {m.rc}"
                res.problems.append(f"round {rnd + 1}: {why}; log {log}")
                print(f"    FAILED ({why}); last lines of {log}:\n{_tail(log)}", flush=True)
            if rnd == args.repeat - 1 or m.rc != 0:
                try:
                    frame, facts = collect_outputs(name, run_dir, manifest)
                    verify(res, frame, facts, manifest["n_docs"])
                    frames[name] = frame
                except Exception as exc:  # noqa: BLE001 - report, keep benchmarking others
                    res.problems.append(f"could not read outputs: {type(exc).__name__}: {exc}")
            if not args.keep:
                shutil.rmtree(run_dir, ignore_errors=True)

    warnings: list[str] = []
    for name, r in results.items():
        for p in r.problems:
            warnings.append(f"{name}: {p}")
    cpus = os.cpu_count() or 1
    busy = {n: max(r.others) for n, r in results.items() if r.others and max(r.others) > 0.10}
    if busy:
        warnings.append("other jobs used the machine during some runs ("
                        + ", ".join(f"{n}: {v:.0%} of {cpus} CPU(s)" for n, v in busy.items())
                        + "); wall-time ratios are noisy, compare CPU s and docs/CPUs too")
    counts = {n: r.scored for n, r in results.items()}
    if len(set(counts.values())) > 1:
        warnings.append("contenders scored different numbers of documents: "
                        + ", ".join(f"{n}={c:,}" for n, c in counts.items()))
    reference = "a" if "a" in frames else next(iter(frames), None)
    agreement = compare_labels(frames, reference) if reference else {}
    for name, agr in agreement.items():
        if agr["label_differs"]:
            warnings.append(f"{name}: {agr['label_differs']:,} of {agr['compared']:,} labels "
                            f"differ from {reference}")
        if agr["max_score_diff"] > 1e-6:
            warnings.append(f"{name}: scores differ from {reference} by up to "
                            f"{agr['max_score_diff']:.2e}")

    total_mib = sum(f["size"] for f in manifest["files"]) / 2**20
    n_json = sum(1 for f in manifest["files"] if f["format"] != "parquet")
    print()
    print(f"input: {manifest['n_docs']:,} docs, {len(manifest['files'])} files "
          f"({n_json} JSONL, {len(manifest['files']) - n_json} Parquet, {total_mib:,.0f} MiB) "
          f"in {len(manifest['dates'])} tranches; model {manifest['model_name']}:"
          f"{manifest['model_version']} (accuracy {manifest['metrics']['accuracy']}); "
          f"workers={args.workers}; repeat={args.repeat} (median wall)")
    print(format_table(results))
    for name in results:
        print(f"  {name}: {CONTENDERS[name][1].format(w=args.workers)}")
    if "c" in results and results["c"].product_wall:
        c = results["c"]
        print(f"c: beamscore's own 'wall time' (pipeline only, without CLI start-up): "
              f"{c.product_wall:.1f}s = {c.scored / c.product_wall:,.0f} docs/s")
    for name, agr in agreement.items():
        print(f"agreement {name} vs {reference}: {agr['label_differs']:,} labels differ of "
              f"{agr['compared']:,}, max |score diff| {agr['max_score_diff']:.1e}")
    ratios = {f"c/{o}": ratio(results, "c", o) for o in ("a", "b", "d", "b2", "c0", "c1")
              if o in results}
    ratios = {k: v for k, v in ratios.items() if v is not None}
    print("ratio " + " ".join(f"{k}={v:.2f}" for k, v in ratios.items())
          + "   (throughput ratio, docs/s; > 1 means beamscore is faster)")
    cpu_ratios = {f"c/{o}": results["c"].cpu and (results[o].cpu / results["c"].cpu)
                  for o in ("a", "b", "d", "b2", "c0", "c1")
                  if o in results and "c" in results
                  and results["c"].cpus and results[o].cpus}
    if cpu_ratios:
        print("cpu-ratio " + " ".join(f"{k}={v:.2f}" for k, v in cpu_ratios.items())
              + "   (CPU seconds of the other / CPU seconds of c; > 1 means c needs less CPU)")
    for w in warnings:
        print(f"WARNING: {w}")

    status = 0
    guard: dict[str, Any] | None = None
    if any(not r.ok for r in results.values()):
        status = 3
    if args.guard is not None:
        value = ratios.get("c/a")
        passed = value is not None and value >= args.guard and results["a"].ok and \
            results["c"].ok
        guard = {"min_ratio": args.guard, "ratio": value, "passed": passed}
        print(f"guard c/a >= {args.guard}: {'PASS' if passed else 'FAIL'}"
              + ("" if value is not None else " (no ratio)"))
        if not passed:
            status = 1
    total = time.monotonic() - t0
    print(f"total bench time {total:.0f}s (data+model {'reused' if manifest['reused'] else 'built'}"
          f" in {prepared:.0f}s)")

    report = {
        "started_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join([sys.executable, *sys.argv]),
        "args": {k: v for k, v in vars(args).items()},
        "machine": info,
        "input": {k: manifest[k] for k in ("n_docs", "seed", "train_docs", "dates", "files",
                                           "input_root")},
        "model": {k: manifest[k] for k in ("registry", "model_name", "model_version", "sha256",
                                           "model_path", "classes", "metrics")},
        "contenders": {n: {**asdict(r), "wall": r.wall, "docs_per_s": r.rate, "cpu": r.cpu,
                           "ok": r.ok}
                       for n, r in results.items()},
        "agreement": {"reference": reference, **agreement},
        "ratios": ratios,
        "cpu_ratios": cpu_ratios,
        "guard": guard,
        "warnings": warnings,
        "exit_status": status,
        "total_seconds": round(total, 1),
    }
    with open(os.path.join(out, "results.json"), "w", encoding="utf-8") as fh:
        json.dump(report, fh, indent=2, default=str)
    print(f"results written to {os.path.join(out, 'results.json')}")
    return status


if __name__ == "__main__":
    sys.exit(main())
