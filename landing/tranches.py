"""Tranches of the landing area and the files they hold.

A tranche is one day folder ``<input_root>/dt=YYYY-MM-DD/`` holding input files of the
formats in ``landing.formats`` in any mix (suffixes in any case), local or ``gs://``
(Beam's FileSystems). Other files are listed as ignored. ``plan_tranches`` lists them at
launch, so a run's input is fixed before any worker starts and ``beamscore plan`` shows
exactly what ``score`` would read.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field

from apache_beam.io.filesystems import FileSystems

from landing.formats import describe_formats, file_format


class InputRootMissing(FileNotFoundError):
    """The input root itself does not exist (not one day missing: all of them)."""


@dataclass(frozen=True)
class SourceFile:
    path: str
    size: int
    format: str
    # Content identity for the tranche ledger: GCS generation, else modification time.
    fingerprint: str = ""


@dataclass
class TranchePlan:
    """One tranche's folder, its input files, the files it ignores, or why it is missing."""

    tranche: str
    folder: str
    files: list[SourceFile] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    missing_reason: str = ""

    @property
    def missing(self) -> bool:
        return bool(self.missing_reason)

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def fingerprint(self) -> str:
        """Hash of (path, size, content identity) of every file: changes when inputs do."""
        h = hashlib.sha256()
        for f in sorted(self.files, key=lambda f: f.path):
            h.update(f"{f.path}\0{f.size}\0{f.fingerprint}\n".encode())
        return h.hexdigest()


def date_range(start: dt.date, end: dt.date) -> list[dt.date]:
    if end < start:
        raise ValueError(f"--to {end} is before --from {start}")
    return [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]


def plan_tranches(input_root: str, dates: Iterable[dt.date]) -> list[TranchePlan]:
    """List the files of each tranche; a folder with no readable files is 'missing'."""
    plans = []
    root = input_root.rstrip("/")
    if not _root_exists(root):
        raise InputRootMissing(f"input root {root} does not exist (input_root / --input-root)")
    for day in dates:
        tranche = day.isoformat()
        folder = f"{root}/dt={tranche}"
        plan = TranchePlan(tranche=tranche, folder=folder)
        matched = FileSystems.match([folder + "/*"])[0].metadata_list
        generations = gcs_generations(folder) if folder.startswith("gs://") and matched else {}
        for meta in sorted(matched, key=lambda m: m.path):
            fmt = file_format(meta.path)
            if fmt is None:
                plan.ignored.append(meta.path)
                continue
            ident = generations.get(meta.path) or str(
                getattr(meta, "last_updated_in_seconds", "") or "")
            plan.files.append(SourceFile(meta.path, int(meta.size_in_bytes), fmt, ident))
        if not matched:
            plan.missing_reason = (f"folder {folder} is empty" if FileSystems.exists(folder)
                                   else f"no folder {folder}")
        elif not plan.files:
            plan.missing_reason = f"no {describe_formats()} files in {folder}"
        plans.append(plan)
    return plans


def gcs_generations(folder: str) -> dict[str, str]:
    """``gs://`` path -> object generation of every object under ``folder``: a new upload
    of a file has a new generation even with the same size and second."""
    from apache_beam.io.gcp import gcsio

    bucket, prefix = gcsio.parse_gcs_path(folder.rstrip("/") + "/", object_optional=True)
    blobs = gcsio.GcsIO().client.list_blobs(bucket, prefix=prefix)
    return {f"gs://{bucket}/{b.name}": f"generation {b.generation}" for b in blobs}


def _root_exists(root: str) -> bool:
    if FileSystems.exists(root):
        return True
    if root.startswith("gs://"):  # a prefix is no object: look for any object below it
        return bool(FileSystems.match([root + "/**"], limits=[1])[0].metadata_list)
    return False
