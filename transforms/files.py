"""Prediction files: one Parquet file per scored DocBatch, named by its batch key.

The file holds the ``predictions`` table's columns (``store.schema.PREDICTIONS``) plus
the record's ``true_label``. Names are deterministic
(``<output_dir>/dt=<tranche>/predictions-<model>-v<version>-<batch_key>.parquet``), so
a retried bundle or a rerun overwrites instead of adding files; the database sink
(``transforms.write``) writes a batch's file once all its rows are committed (a run
that lost its tranche writes none); a rescore that batches
differently writes other names, and ``prediction_files`` finds the model version's files
that a run removes when it takes the tranche. Local files are written to a temporary
name (``<name>.tmp-<random>``) and renamed. A temporary file is removed when its write
fails (a full disk), and ``remove_partial_files`` removes any left in a tranche's folder
(a killed worker) when a run takes the tranche.
"""

from __future__ import annotations

import glob
import random
import re
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from store.schema import PREDICTIONS, Column
from transforms.records import DocBatch, RunContext, true_labels

TMP_MARK = ".tmp-"  # in the name of a file being written
# A batch key holds lowercase hex digits and '-' only (``transforms.read``), never a 'v':
# the last ``-v<version>-`` of a name is the one after the model's name, whatever that
# name holds (``demo-v1`` version 2 is ``predictions-demo-v1-v2-<key>.parquet``).
_PREDICTION_NAME = re.compile(
    r"^predictions-(?P<model>.+)-v(?P<version>[1-9][0-9]*)-[0-9a-f][0-9a-f-]*\.parquet$")
_ARROW = {"text": pa.string(), "float": pa.float64(), "int": pa.int64(),
          "time": pa.string(), "json": pa.string()}
FILE_COLUMNS = (*PREDICTIONS.columns, Column("true_label", "text", nullable=True))
PARQUET_SCHEMA = pa.schema([pa.field(c.name, _ARROW[c.type], nullable=True)
                            for c in FILE_COLUMNS])


def write_atomically(path: str, data: bytes) -> None:
    """Local: write a temp file then rename. GCS: an upload is atomic on close."""
    if path.startswith("gs://"):
        with FileSystems.create(path) as fh:
            fh.write(data)
        return
    tmp = f"{path}{TMP_MARK}{random.getrandbits(48):012x}"
    try:
        with FileSystems.create(tmp) as fh:
            fh.write(data)
        FileSystems.rename([tmp], [path])
    except BaseException:
        _remove_quietly(tmp)
        raise


def delete_files(paths: list[str]) -> None:
    """Delete files by name. Beam's delete takes each path as a pattern (local and GCS
    alike): a name holding a glob character (a folder named ``out[1]``) is escaped so
    that it matches only itself."""
    if paths:
        FileSystems.delete([glob.escape(p) for p in paths])


def _remove_quietly(path: str) -> None:
    try:
        if FileSystems.exists(path):
            delete_files([path])
    except Exception:  # noqa: BLE001 - the write's own error is the one to report
        pass


def tranche_folder(output_dir: str, tranche: str) -> str:
    return f"{output_dir.rstrip('/')}/dt={tranche}"


def partial_files(output_dir: str, tranche: str) -> list[str]:
    """The temporary files in a tranche's output folder: writes in progress, or left by
    a failed or killed one."""
    return [m.path for m in FileSystems.match(
        [f"{glob.escape(tranche_folder(output_dir, tranche))}/*{TMP_MARK}*"])[0].metadata_list]


def remove_partial_files(paths: list[str]) -> list[str]:
    """Remove ``paths`` (temporary files of ``partial_files``); returns them."""
    delete_files(paths)
    return paths


def prediction_file(output_dir: str, ctx: RunContext, tranche: str, batch_key: str) -> str:
    return (f"{tranche_folder(output_dir, tranche)}/predictions-{ctx.model_name}-"
            f"v{ctx.model_version}-{batch_key}.parquet")


def prediction_model(name: str) -> tuple[str, str] | None:
    """(model name, version) of the prediction file named ``name`` (no folder), or None
    when ``name`` is no prediction file's."""
    m = _PREDICTION_NAME.match(name)
    return (m["model"], m["version"]) if m else None


def prediction_files(output_dir: str, tranche: str, model_name: str,
                     model_version: str) -> list[str]:
    """The prediction files of ``model_name`` version ``model_version`` in a tranche's
    output folder; another model's or version's files are never among them (``demo``
    and ``demo-2``, version 1 and 10)."""
    pattern = glob.escape(f"{tranche_folder(output_dir, tranche)}/predictions-{model_name}-"
                          f"v{model_version}-") + "*.parquet"
    return [m.path for m in FileSystems.match([pattern])[0].metadata_list
            if prediction_model(m.path.rsplit("/", 1)[-1]) == (model_name, model_version)]


def write_parquet(path: str, table: pa.Table) -> None:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    write_atomically(path, sink.getvalue().to_pybytes())


def prediction_table(batch: DocBatch, cols: dict[str, Any],
                     keep: list[bool] | None = None) -> pa.Table:
    """A scored batch's prediction file: its ``prediction_columns`` (``cols``) and the
    records' true labels, of the rows ``keep`` marks (all by default)."""
    cols = cols | {"true_label": true_labels(batch)}
    return pa.table({c.name: cols[c.name] if keep is None else
                     [v for v, k in zip(cols[c.name], keep) if k] for c in FILE_COLUMNS},
                    schema=PARQUET_SCHEMA)
