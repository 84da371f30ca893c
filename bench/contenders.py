"""The contenders of ``run_bench.py``: what each one is, how to start it, and the check
of what it wrote.

``CONTENDERS`` names every contender (a short description for the table, then what it
writes); ``contender_command`` is the command line that runs one on the manifest's files
and model. After a run, ``collect_outputs`` reads everything the contender wrote
(predictions, database rows, beamscore's run summary) and ``verify`` records in its
``Result`` whether it scored every document exactly once; ``compare_labels`` checks that
all contenders agree with a reference one. A ``Result`` gathers the measurements of all
rounds of one contender.
"""

from __future__ import annotations

import glob
import json
import os
import sqlite3
import statistics
import sys
from dataclasses import dataclass, field
from typing import Any

from proctree import Measurement

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
BEAMSCORE_CONTENDERS = ("c", "c0", "c1", "c8", "ct")  # run `beamscore score`, checked the same way
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
    "c8": ("beamscore score, 8 workers",
           "as c with --workers 8 (on a machine with fewer cores, the cost of more "
           "workers than cores: c8/c)"),
    "ct": ("beamscore score, {w} workers, untracked",
           "as c with --tracking-enabled false (for the cost of tracking, c/ct)"),
    "c0": ("beamscore, {w} workers, sklearn featuriser",
           "as c with inference.fast_text_features=false (scikit-learn's own transform)"),
    "d": ("plain script, ProcessPool {w} procs",
          "a's per-file function over ProcessPoolExecutor({w}); Parquet per file + "
          "one SQLite in WAL mode"),
}


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
                "--workers", {"c1": "1", "c8": "8"}.get(name, str(workers)),
                "--inference-fast-text-features", "false" if name == "c0" else "true",
                "--tracking-enabled", "false" if name == "ct" else "true"]
    raise ValueError(name)


# ------------------------------------------------------------------ reading the outputs
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


def _collect_plain(run_dir: str, facts: dict[str, Any]) -> Any:
    """Contenders a and d: one Parquet per input file and ``predictions.db``."""
    frame = _read_parquets(sorted(glob.glob(os.path.join(run_dir, "dt=*", "*.parquet"))),
                           ["doc_id", "label", "score"])
    facts["db_rows"] = _sqlite_count(os.path.join(run_dir, "predictions.db"))
    return frame


def _collect_beam(run_dir: str) -> Any:
    """Contenders b and b2: the JSONL that ``WriteToText`` wrote."""
    import pandas as pd

    sys.path.insert(0, BENCH_DIR)
    from baselines import iter_beam_output

    rows = list(iter_beam_output(run_dir))
    return pd.DataFrame(rows, columns=["id", "label", "score"]).rename(
        columns={"id": "doc_id"})


def _collect_beamscore(run_dir: str, facts: dict[str, Any]) -> Any:
    """Contenders c, c0, c1 and c8: Parquet, the database, dead letters and the run summary."""
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
    return frame


def collect_outputs(name: str, run_dir: str,
                    manifest: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """(DataFrame doc_id/label/score of everything written, facts about the outputs)."""
    facts: dict[str, Any] = {}
    if name in ("a", "d"):
        frame = _collect_plain(run_dir, facts)
    elif name in ("b", "b2"):
        frame = _collect_beam(run_dir)
    else:
        frame = _collect_beamscore(run_dir, facts)
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


def log_tail(path: str, n: int = 15) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return "".join(fh.readlines()[-n:])
    except OSError:
        return ""


# ------------------------------------------------------------------ results and checks
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

    def record(self, m: Measurement, rnd: int) -> str | None:
        """Add round ``rnd`` (0-based), logged to ``self.log``; returns why it failed, if it
        did (and then records that as a problem)."""
        self.walls.append(m.wall)
        self.cpus.append(m.cpu)
        self.loads.append(m.load_before)
        cpus = os.cpu_count() or 1
        self.others.append(m.other_cpu / (m.wall * cpus) if m.wall > 0 else 0.0)
        self.rcs.append(m.rc)
        self.peak_rss_mib = max(self.peak_rss_mib, m.tree.peak_rss_kib / 1024)
        self.peak_pss_mib = max(self.peak_pss_mib, m.tree.peak_pss_kib / 1024)
        self.peak_single_rss_mib = max(self.peak_single_rss_mib,
                                       m.tree.peak_single_rss_kib / 1024)
        self.max_procs = max(self.max_procs, m.tree.max_procs)
        if self.name in BEAMSCORE_CONTENDERS:
            self.product_wall = _product_wall(self.log)
        if m.rc == 0:
            return None
        why = "timed out" if m.timed_out else f"exited {m.rc}"
        self.problems.append(f"round {rnd + 1}: {why}; log {self.log}")
        return why


def _verify_run_summary(res: Result, summary: dict[str, Any] | None, n_docs: int) -> None:
    if summary is None:
        res.problems.append("no run summary in <output>/_runs")
        return
    total = summary.get("total") or {}
    if summary.get("status") != "succeeded":
        res.problems.append(f"run status {summary.get('status')!r}")
    for key in ("read", "valid", "scored", "written"):
        if total.get(key) != n_docs:
            res.problems.append(f"run summary says {key}={total.get(key)}, "
                                f"expected {n_docs:,}")
    if total.get("dead_lettered"):
        res.problems.append(f"{total['dead_lettered']} dead letters on all-valid input")


def verify(res: Result, frame: Any, facts: dict[str, Any], n_docs: int) -> None:
    res.scored = facts["unique_ids"]
    res.checks.update(facts)
    if facts["rows"] != n_docs or facts["unique_ids"] != n_docs:
        res.problems.append(f"scored {facts['unique_ids']:,} distinct documents in "
                            f"{facts['rows']:,} output rows, expected {n_docs:,}")
    if "db_rows" in facts and facts["db_rows"] != n_docs:
        res.problems.append(f"database holds {facts['db_rows']} prediction rows, "
                            f"expected {n_docs:,}")
    if res.name in BEAMSCORE_CONTENDERS:
        _verify_run_summary(res, facts.get("run_summary"), n_docs)


def check_outputs(res: Result, run_dir: str, manifest: dict[str, Any]) -> Any:
    """Read and verify what ``res``'s contender wrote into ``run_dir``: its frame, or None
    (with a problem recorded) when the outputs could not be read."""
    try:
        frame, facts = collect_outputs(res.name, run_dir, manifest)
        verify(res, frame, facts, manifest["n_docs"])
    except Exception as exc:  # noqa: BLE001 - report, keep benchmarking others
        res.problems.append(f"could not read outputs: {type(exc).__name__}: {exc}")
        return None
    return frame


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
