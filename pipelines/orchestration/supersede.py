"""What a run clears when it takes a tranche, before it writes anything to it.

Rescoring a tranche supersedes what earlier runs of the same model left for it: their
dead letters, rows (``store.run_records.supersede_dead_letters``) and JSONL files
(``<output_dir>/dt=<tranche>/dead_letters-<run_id>-<digest>.jsonl``), and the model
version's Parquet files (``predictions-<model>-v<version>-<batch_key>.parquet``; a batch
key depends on the file, chunk and batch, so a rescore with another batch size or
chunking, or of a renamed input file, would not overwrite them all), so that the
tranche's predictions and dead letters hold each record once; and the temporary files
(``*.tmp-*``) that a failed or killed write left in its output folder. Another model's
or version's files stay. The predictions rows of records that are now dead letters are
removed when the run has accounted for every record it read (``transforms.outcome``).
"""

from __future__ import annotations

import glob
import logging

from apache_beam.io.filesystems import FileSystems

from store import run_records
from store.database import Database, Fence, LeaseLost
from store.ledger import TrancheLedger
from transforms.files import (
    TMP_MARK,
    delete_files,
    partial_files,
    prediction_files,
    prediction_model,
    remove_partial_files,
    tranche_folder,
)

_LOG = logging.getLogger(__name__)
_PREFIX, _SUFFIX = "dead_letters-", ".jsonl"


def clear_tranche(db: Database, output_dir: str, tranche: str, model: str,
                  fence: Fence, lease_seconds: float) -> None:
    """Supersede the earlier dead letters of ``tranche`` by runs of ``model``
    (``name:version``) and the model version's prediction files, and remove its
    temporary files; logs what it removed. Fenced like every write of the run
    (``fence``): the run confirms that it still holds the tranche, its lease renewed
    for ``lease_seconds``, before it deletes any file, and deletes rows only while it
    holds it, in the same statement; else ``LeaseLost``, nothing removed."""
    run_id = fence.run_id
    if not TrancheLedger(db).confirm(fence, tranche, lease_seconds):
        raise LeaseLost(f"tranche {tranche} was taken over by another run before run "
                        f"{run_id} cleared it: nothing of it removed")
    rows = run_records.supersede_dead_letters(db, tranche, model, run_id, fence)
    files = dead_letter_files(output_dir, tranche)
    models = run_records.models_of(db, files.values())
    stale = [path for path, run in files.items() if run != run_id and models.get(run) == model]
    delete_files(stale)
    name, _, version = model.rpartition(":")
    predictions = prediction_files(output_dir, tranche, name, version)
    delete_files(predictions)
    partial = remove_partial_files(_partial_of(db, output_dir, tranche, model))
    if rows or stale or predictions or partial:
        _LOG.info("tranche %s: superseded %d dead letter(s), %d dead-letter file(s) and "
                  "%d prediction file(s) of earlier runs of %s; removed %d temporary "
                  "file(s)", tranche, rows, len(stale), len(predictions), model, len(partial))


def _partial_of(db: Database, output_dir: str, tranche: str, model: str) -> list[str]:
    """The temporary files of ``model`` in the tranche's folder: its prediction files'
    and the dead-letter files' of its runs (another model's writes in progress stay)."""
    name, _, version = model.rpartition(":")
    paths = partial_files(output_dir, tranche)
    names = {p: p.rsplit("/", 1)[-1] for p in paths}
    runs = {p: n[len(_PREFIX):].split(TMP_MARK)[0].rsplit("-", 1)[0]
            for p, n in names.items() if n.startswith(_PREFIX)}
    models = run_records.models_of(db, runs.values())
    return [p for p, n in names.items()
            if prediction_model(n.split(TMP_MARK)[0]) == (name, version)
            or (p in runs and models.get(runs[p]) == model)]


def dead_letter_files(output_dir: str, tranche: str) -> dict[str, str]:
    """Path -> run id of every dead-letter file in the tranche's output folder."""
    folder = tranche_folder(output_dir, tranche)
    found = FileSystems.match([f"{glob.escape(folder)}/{_PREFIX}*{_SUFFIX}"])[0].metadata_list
    out = {}
    for meta in found:
        name = meta.path.rsplit("/", 1)[-1][len(_PREFIX):-len(_SUFFIX)]
        if "-" in name:
            out[meta.path] = name.rsplit("-", 1)[0]
    return out
