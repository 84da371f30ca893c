"""Records are never held hostage by what a run leaves behind: a rescored tranche holds
each record once (predictions + dead letters, SQLite and PostgreSQL; its Parquet files
too when the rescore batches differently or its input file was renamed, while other
models' and versions' files stay), a full disk leaves no temporary files, and a record
too deeply nested to travel between stages is one dead letter (issue 18)."""

from __future__ import annotations

import errno
import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from apache_beam.io.filesystems import FileSystems
from apache_beam.testing import test_pipeline

from landing.samples import make_docs, write_tranche
from models.preprocess import PreprocessConfig
from models.registry import ModelRegistry
from pipelines.orchestration.score import run
from tests.data import query_rows
from tests.pipelines.helpers import run_cli
from transforms.files import prediction_model

DAY, DAY2 = "2026-04-01", "2026-04-02"


def _score(root: Path, registry: str, db: str, out: Path, *extra: str) -> Any:
    return run_cli("score", "--input-root", str(root), "--registry", registry, "--db", db,
                   "--output-dir", str(out), "--max-dead-letter-ratio", "0.5", *extra)


def _write(folder: Path, docs: list[dict[str, Any]], broken: set[int]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "docs.jsonl").write_text("".join(
        '{"id": "' + d["id"] + '", "text": \n' if i in broken else json.dumps(d) + "\n"
        for i, d in enumerate(docs)))


def test_rescoring_a_tranche_holds_each_record_once(registry_root: str, tmp_path: Path,
                                                    db_url: str) -> None:
    root, out = tmp_path / "landing", tmp_path / "out"
    docs = list(make_docs(30, seed=18, prefix="r"))
    folder = root / f"dt={DAY}"
    dead_files = f"dt={DAY}/dead_letters-*.jsonl"

    def state() -> tuple[int, int, set[str], int]:
        preds = query_rows(db_url, "SELECT doc_id FROM predictions")
        dead = query_rows(db_url, "SELECT position FROM dead_letters")
        lines = sum(len(f.read_text().splitlines()) for f in out.glob(dead_files))
        return len(preds), len(dead), {p for (p,) in preds}, lines

    _write(folder, docs, set())
    assert _score(root, registry_root, db_url, out, "--date", DAY).rc == 0
    assert state()[:2] == (30, 0)
    _write(folder, docs, {3, 4, 5})  # three records break: their predictions are stale
    assert _score(root, registry_root, db_url, out, "--date", DAY).rc == 0
    n_pred, n_dead, ids, lines = state()
    assert (n_pred, n_dead, lines) == (27, 3, 3)
    assert not ids & {d["id"] for d in docs[3:6]}
    _write(folder, docs, set())  # fixed: the old dead letters are superseded
    result = _score(root, registry_root, db_url, out, "--date", DAY)
    assert result.rc == 0, result.err
    assert state()[:2] == (30, 0) and state()[3] == 0
    assert not list(out.glob(dead_files))


def test_other_models_dead_letters_are_not_superseded(
        registry_copy: str, tmp_path: Path, trained_model: Any,
        preprocessing: PreprocessConfig) -> None:
    ModelRegistry(registry_copy).register("other", trained_model, source="test",
                                          preprocessing=preprocessing.to_dict())
    root, out, url = tmp_path / "landing", tmp_path / "out", f"sqlite:///{tmp_path / 's.db'}"
    _write(root / f"dt={DAY}", list(make_docs(10, seed=3, prefix="m")), {1})
    assert _score(root, registry_copy, url, out, "--date", DAY).rc == 0
    assert _score(root, registry_copy, url, out, "--date", DAY, "--model", "other").rc == 0
    assert query_rows(url, "SELECT count(*) FROM dead_letters") == [(2,)]
    assert len(list(out.glob(f"dt={DAY}/dead_letters-*.jsonl"))) == 2


def _parquet_rows(out: Path, day: str = DAY) -> list[tuple[str, str, str]]:
    """(doc_id, run_id, source file name) of every row of the tranche's Parquet files of
    ``demo`` version 1."""
    return [(r["doc_id"], r["run_id"], Path(r["source_file"]).name)
            for f in sorted((out / f"dt={day}").glob("predictions-*.parquet"))
            if prediction_model(f.name) == ("demo", "1")
            for r in pq.read_table(f).to_pylist()]


def _last_run(url: str) -> str:
    return str(query_rows(url, "SELECT run_id FROM runs ORDER BY started_at DESC")[0][0])


def test_a_rescore_with_another_batch_size_leaves_each_record_in_one_parquet_file(
        registry_root: str, tmp_path: Path) -> None:
    root, out, url = tmp_path / "landing", tmp_path / "out", f"sqlite:///{tmp_path / 's.db'}"
    docs = list(make_docs(60, seed=21, prefix="b"))
    _write(root / f"dt={DAY}", docs, set())
    assert _score(root, registry_root, url, out, "--date", DAY, "--batch-size", "7").rc == 0
    assert len(_parquet_rows(out)) == 60
    result = _score(root, registry_root, url, out, "--date", DAY, "--force",
                    "--batch-size", "25")
    assert result.rc == 0, result.err
    rows = _parquet_rows(out)
    assert sorted(r[0] for r in rows) == sorted(d["id"] for d in docs)
    assert {r[1] for r in rows} == {_last_run(url)}
    assert len(list((out / f"dt={DAY}").glob("predictions-*.parquet"))) == 3  # 25 + 25 + 10


def test_a_renamed_input_file_leaves_each_record_in_one_parquet_file(
        registry_root: str, tmp_path: Path) -> None:
    root, out, url = tmp_path / "landing", tmp_path / "out", f"sqlite:///{tmp_path / 's.db'}"
    folder = root / f"dt={DAY}"
    docs = list(make_docs(40, seed=22, prefix="n"))
    _write(folder, docs, set())
    assert _score(root, registry_root, url, out, "--date", DAY).rc == 0
    (folder / "docs.jsonl").rename(folder / "export-v2.jsonl")  # the same records again
    result = _score(root, registry_root, url, out, "--date", DAY)  # its fingerprint changed
    assert result.rc == 0, result.err
    rows = _parquet_rows(out)
    assert sorted(r[0] for r in rows) == sorted(d["id"] for d in docs)
    assert {(r[1], r[2]) for r in rows} == {(_last_run(url), "export-v2.jsonl")}


def test_a_rescore_keeps_the_files_of_models_and_versions_its_name_prefixes(
        registry_root: str, tmp_path: Path) -> None:
    root, out, url = tmp_path / "landing", tmp_path / "out", f"sqlite:///{tmp_path / 's.db'}"
    _write(root / f"dt={DAY}", list(make_docs(20, seed=23, prefix="p")), set())
    folder = out / f"dt={DAY}"
    folder.mkdir(parents=True)
    key = "0123456789ab-0000-00000"
    others = [folder / f"predictions-{model}-{key}.parquet" for model in (
        "demo-v10", "demo-2-v1", "demo-v1-v1", "demo.x-v1", "demo_v1-v1", "demo-v1-0123-v2")]
    for path in others:
        path.write_bytes(b"another model's or version's predictions")
    stale = folder / f"predictions-demo-v1-{key}.parquet"
    stale.write_bytes(b"an earlier run's predictions of demo version 1")
    result = _score(root, registry_root, url, out, "--date", DAY)
    assert result.rc == 0, result.err
    assert all(path.exists() for path in others)
    assert not stale.exists()
    assert len(_parquet_rows(out)) == 20


class _FullDisk:
    """A writer that writes a little of the file, then fails as a full disk does."""

    def __init__(self, fh: Any):
        self._fh = fh

    def __enter__(self) -> _FullDisk:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._fh.close()

    def write(self, data: bytes) -> None:
        self._fh.write(data[:10])
        raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_leaves_no_temporary_files(registry_root: str, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    root, out = tmp_path / "landing", tmp_path / "out"
    write_tranche(str(root), DAY, list(make_docs(50, seed=5, prefix="f")), "jsonl")
    args = ["--model", "demo", "--date", DAY, "--input-root", str(root), "--registry",
            registry_root, "--db", f"sqlite:///{tmp_path / 's.db'}", "--output-dir", str(out)]
    create = FileSystems.create
    monkeypatch.setattr(FileSystems, "create", lambda path, *a, **k: _FullDisk(
        create(path, *a, **k)) if ".parquet.tmp-" in path else create(path, *a, **k))
    rc = run(args, test_pipeline=test_pipeline.TestPipeline(runner="FnApiRunner"))
    assert rc == 1
    assert not list(out.rglob("*.tmp-*"))
    monkeypatch.undo()
    name = "0123456789ab-0000-00000.parquet.tmp-0123456789ab"
    left = out / f"dt={DAY}" / f"predictions-demo-v1-{name}"
    left.write_bytes(b"half a file")  # what a killed worker leaves
    others = [out / f"dt={DAY}" / f"predictions-{model}-{name}"
              for model in ("demo-v1-v1", "other-v3")]  # models demo-v1:1 and other:3
    for other in others:
        other.write_bytes(b"another model's write in progress")
    rc = run(args, test_pipeline=test_pipeline.TestPipeline(runner="FnApiRunner"))
    assert rc == 0
    assert sorted(out.rglob("*.tmp-*")) == others
    assert len(list((out / f"dt={DAY}").glob("predictions-*.parquet"))) >= 1


def test_a_record_nested_500_levels_is_one_dead_letter(registry_root: str,
                                                       tmp_path: Path) -> None:
    root, out, url = tmp_path / "landing", tmp_path / "out", f"sqlite:///{tmp_path / 's.db'}"
    for day in (DAY, DAY2):
        write_tranche(str(root), day, list(make_docs(20, seed=6, prefix=day)), "jsonl",
                      name="good")
    deep = {"id": "deep", "text": "a valid text", "extra": json.loads("[" * 500 + "]" * 500)}
    (root / f"dt={DAY}" / "deep.jsonl").write_text(json.dumps(deep) + "\n")
    result = _score(root, registry_root, url, out, "--from", DAY, "--to", DAY2)
    assert result.rc == 0, result.err
    assert query_rows(url, "SELECT tranche, count(*) FROM predictions GROUP BY tranche "
                      "ORDER BY tranche") == [(DAY, 20), (DAY2, 20)]
    [(source, position, stage, reason)] = query_rows(
        url, "SELECT source_file, position, stage, reason FROM dead_letters")
    assert (Path(source).name, position, stage) == ("deep.jsonl", 1, "read")
    assert "nested deeper than" in reason
