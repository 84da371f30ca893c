"""Tranches of the landing area and the files they hold.

A tranche is one day folder ``<input_root>/dt=YYYY-MM-DD/`` holding input files of the
formats in ``landing.formats`` in any mix (suffixes in any case), local or ``gs://``
(Beam's FileSystems). ``plan_tranches`` lists them at launch, so a run's input is fixed
before any worker starts and ``beamscore plan`` shows exactly what ``score`` would read.

Nothing under the input root goes unmentioned. An entry that will never be scored is
``Unscored`` with why: in a tranche, a file of no input format or a subfolder (tranches
are not read recursively; on ``gs://`` a folder placeholder object ``x/`` is one, while
the tranche folder's own placeholder is no entry); under the root
(``unscored_entries``), a ``dt=`` folder that is no date, any other folder, a file
outside the tranche folders. A symbolic link is followed only when its target is inside
the input root; a link to anywhere else is ``refused``: never opened, it is one dead
letter naming the link. So is an input file whose name is not valid UTF-8 (a local file
named in another encoding): no database row, Parquet file or JSON line can name it as it
is, so it is named with its undecodable bytes escaped (``caf\\xe9.jsonl``), here and
wherever an entry is listed. An entry that cannot be looked at (a link to nothing inside
the root, or round in a loop) is listed as never read, with why. Folders are listed,
never matched against a pattern: Beam's ``*`` matches no backslash, a character local
file and object names may hold.
``has_records`` tells a tranche whose files hold no record (an empty file, a header-only
CSV).
"""

from __future__ import annotations

import datetime as dt
import glob
import hashlib
import os
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field

from apache_beam.io.filesystems import FileSystems

from landing.formats import describe_formats, file_format, read_chunk
from landing.reading import Chunk, safe_text

_TRANCHE = re.compile(r"^dt=(\d{4}-\d{2}-\d{2})$")
SUBFOLDER = "a subfolder: tranches are not read recursively"
OUTSIDE_LINK = "symbolic link to a target outside input_root: not followed"
UNNAMED = ("a file name that is not valid UTF-8 (shown with its bytes escaped): not read; "
           "rename the file")
REFUSED = (OUTSIDE_LINK, UNNAMED)  # input entries never opened: one dead letter each


class InputRootMissing(FileNotFoundError):
    """The input root itself does not exist (not one day missing: all of them)."""


@dataclass(frozen=True)
class SourceFile:
    path: str
    size: int
    format: str
    # Content identity for the tranche ledger: GCS generation, else modification time.
    fingerprint: str = ""


@dataclass(frozen=True)
class Unscored:
    """An entry under the input root that is never read as input, and why."""

    path: str
    why: str


@dataclass
class TranchePlan:
    """One tranche's folder, its input files, the entries it never scores, the links it
    refuses (each one dead letter), or why it is missing."""

    tranche: str
    folder: str
    files: list[SourceFile] = field(default_factory=list)
    unscored: list[Unscored] = field(default_factory=list)
    refused: list[Unscored] = field(default_factory=list)
    missing_reason: str = ""

    @property
    def missing(self) -> bool:
        return bool(self.missing_reason)

    @property
    def ignored(self) -> list[str]:
        """Paths of the entries never scored."""
        return [u.path for u in self.unscored]

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def fingerprint(self) -> str:
        """Hash of (path, size, content identity) of every file: changes when inputs do."""
        h = hashlib.sha256()
        for f in sorted(self.files, key=lambda f: f.path):
            h.update(f"{f.path}\0{f.size}\0{f.fingerprint}\n".encode())
        for r in sorted(self.refused, key=lambda r: r.path):
            h.update(f"refused {r.path}\n".encode())
        return h.hexdigest()


def date_range(start: dt.date, end: dt.date) -> list[dt.date]:
    if end < start:
        raise ValueError(f"--to {end} is before --from {start}")
    return [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]


def plan_tranches(input_root: str, dates: Iterable[dt.date]) -> list[TranchePlan]:
    """List the files of each tranche; a folder with nothing to read is 'missing'."""
    root = input_root.rstrip("/")
    if not _root_exists(root):
        raise InputRootMissing(f"input root {root} does not exist (input_root / --input-root)")
    if "://" not in root and os.path.isfile(root):
        raise InputRootMissing(f"input root {root} is a file, not a folder of dt=YYYY-MM-DD "
                               "folders (input_root / --input-root)")
    return [_plan_tranche(root, day.isoformat()) for day in dates]


@dataclass(frozen=True)
class _Entry:
    """An entry of a tranche folder that is no folder: its size and modification time
    (local; a ``gs://`` object is known by its generation), or, for one that cannot be
    looked at (a link that leads nowhere, or round in a loop), why."""

    path: str
    size: int = 0
    updated: float | None = None
    error: str = ""


def _plan_tranche(root: str, tranche: str) -> TranchePlan:
    folder = f"{root}/dt={tranche}"
    plan = TranchePlan(tranche=tranche, folder=folder)
    generations: dict[str, str] = {}
    if folder.startswith("gs://"):
        objects = _gcs_objects(folder)
        generations = {path: f"generation {g}" for path, (_, g) in objects.items()}
        # A gs:// object named "x/" is a folder placeholder (a console's "create folder"):
        # the folder's own is no entry, one below it is a subfolder (``_subfolders``).
        prefix = folder + "/"
        entries = [_Entry(path, size) for path, (size, _) in objects.items()
                   if path != prefix and "/" not in path[len(prefix):]]
        subfolders = _subfolders(folder, generations)
        unlisted = "" if objects else f"no folder {folder}"
    else:
        entries, subfolders, unlisted = _local_entries(folder)
    for entry in sorted(entries, key=lambda e: e.path):
        why = _not_input(root, entry.path) if not entry.error else (
            OUTSIDE_LINK if not _inside(entry.path, root) else entry.error)
        shown = safe_text(entry.path)
        if why in REFUSED or (not why and shown != entry.path):
            plan.refused.append(Unscored(shown, why or UNNAMED))
        elif why:
            plan.unscored.append(Unscored(shown, why))
        else:
            updated = entry.updated  # 0.0: the epoch
            ident = generations.get(entry.path) or ("" if updated is None else str(updated))
            plan.files.append(SourceFile(entry.path, entry.size,
                                         str(file_format(entry.path)), ident))
    plan.unscored += [Unscored(p, SUBFOLDER) for p in subfolders]
    if not entries:
        plan.missing_reason = unlisted or f"folder {folder} is empty"
    elif not plan.files and not plan.refused:
        plan.missing_reason = f"no {describe_formats()} files in {folder}"
    return plan


def _local_entries(folder: str) -> tuple[list[_Entry], list[str], str]:
    """A local tranche folder's entries that are no folder, its subfolders (links
    followed: a link to a folder is one), and why it could not be listed ("" if it
    was). Every name is taken as it is: no pattern matching, which would miss a name
    holding a backslash."""
    try:
        with os.scandir(folder) as found:
            names = [e.name for e in found]
    except FileNotFoundError:
        return [], [], f"no folder {folder}"
    except NotADirectoryError:
        return [], [], f"{folder} is not a folder"
    except OSError as exc:
        return [], [], f"folder {folder} cannot be listed ({exc.strerror or exc})"
    entries, subfolders = [], []
    for name in names:
        path = f"{folder}/{name}"
        try:
            st = os.stat(path)
        except OSError as exc:
            entries.append(_Entry(path, error=f"cannot be looked at ({exc.strerror or exc})"
                                  ": not read"))
            continue
        if stat.S_ISDIR(st.st_mode):
            subfolders.append(safe_text(path))
        else:
            entries.append(_Entry(path, st.st_size, st.st_mtime))
    return entries, sorted(subfolders), ""


def _not_input(root: str, path: str) -> str:
    """Why the entry ``path`` of a tranche folder is not read as input ('' if it is)."""
    if not path.startswith("gs://"):
        if not _inside(path, root):  # a link, or a file in a linked folder, leading out
            return OUTSIDE_LINK
        if not os.path.isfile(path):
            return "not a regular file"
    if file_format(path) is None:
        return f"not {describe_formats()}"
    return ""


def _inside(path: str, root: str) -> bool:
    real, real_root = os.path.realpath(path), os.path.realpath(root)
    return os.path.commonpath([real, real_root]) == real_root


def _subfolders(folder: str, generations: dict[str, str]) -> list[str]:
    """The subfolders of a ``gs://`` tranche folder: ``folder/x/``, named so, of the
    objects below it or a placeholder object of that name."""
    prefix = folder.rstrip("/") + "/"
    return sorted({prefix + p[len(prefix):].split("/", 1)[0] + "/" for p in generations
                   if p.startswith(prefix) and "/" in p[len(prefix):]})


def unscored_entries(input_root: str) -> list[Unscored]:
    """The entries directly under the input root that are never scored, with why: files
    outside any tranche folder, folders not named ``dt=YYYY-MM-DD``, ``dt=`` folders
    whose name is no date (``dt=2026-02-30``). Tranche folders are not listed."""
    root = input_root.rstrip("/")
    found = []
    for path, is_dir, error in _root_listing(root):
        name = path.rstrip("/").rsplit("/", 1)[-1]
        if error:
            found.append(Unscored(path, error))
            continue
        if not is_dir:
            found.append(Unscored(path, "a file outside the tranche folders (dt=YYYY-MM-DD/)"))
            continue
        m = _TRANCHE.match(name)
        if m is None:
            found.append(Unscored(path, "not a tranche folder (dt=YYYY-MM-DD)"))
            continue
        try:
            dt.date.fromisoformat(m.group(1))
        except ValueError:
            found.append(Unscored(path, f"{m.group(1)} is not a date: never a tranche"))
    return found


def _root_listing(root: str) -> list[tuple[str, bool, str]]:
    """(path, is a folder, why it cannot be looked at: "" if it can) of every entry
    directly under ``root``."""
    if not root.startswith("gs://"):
        with os.scandir(root) as entries:
            return sorted((safe_text(f"{root}/{e.name}"), *_kind(e)) for e in entries)
    from apache_beam.io.gcp import gcsio

    bucket, prefix = gcsio.parse_gcs_path(root + "/", object_optional=True)
    listing = gcsio.GcsIO().client.list_blobs(bucket, prefix=prefix, delimiter="/")
    files = [(f"gs://{bucket}/{b.name}", False, "") for b in listing if b.name != prefix]
    folders = [(f"gs://{bucket}/{p}", True, "") for p in getattr(listing, "prefixes", ())]
    return sorted(files + folders)


def _kind(entry: os.DirEntry[str]) -> tuple[bool, str]:
    """Whether a local entry is a folder (links followed), and why it cannot be looked
    at ("" if it can: a link that leads round in a loop cannot)."""
    try:
        return entry.is_dir(), ""
    except OSError as exc:
        return False, f"cannot be looked at ({exc.strerror or exc}): never read"


def has_records(plan: TranchePlan, required: tuple[str, ...] = ()) -> bool:
    """Whether reading the tranche yields anything (a record or a dead letter): an empty
    file or a header-only CSV yields nothing; a file without one of the ``required``
    columns (the run's id and text fields) yields its dead letter, as the run reads it.
    Reads each file only up to its first item, and stops at the first file that has
    one."""
    if plan.refused:
        return True
    for f in plan.files:
        items = read_chunk(Chunk(plan.tranche, f.path, f.format), required=required)
        try:
            if next(items, None) is not None:
                return True
        finally:
            getattr(items, "close", lambda: None)()  # the file, closed now
    return False


def _gcs_objects(folder: str) -> dict[str, tuple[int, int]]:
    """``gs://`` path -> (size, generation) of every object
    under ``folder``, named as they are (no pattern: Beam's ``*`` matches no backslash,
    a character object names may hold). The generation is the file's identity for the
    ledger: a new upload of a file has a new one even with the same size and second."""
    from apache_beam.io.gcp import gcsio

    bucket, prefix = gcsio.parse_gcs_path(folder.rstrip("/") + "/", object_optional=True)
    blobs = gcsio.GcsIO().client.list_blobs(bucket, prefix=prefix)
    return {f"gs://{bucket}/{b.name}": (int(b.size or 0), b.generation) for b in blobs}


def _root_exists(root: str) -> bool:
    if FileSystems.exists(root):
        return True
    if root.startswith("gs://"):  # a prefix is no object: look for any object below it
        return bool(FileSystems.match([glob.escape(root) + "/**"],
                                      limits=[1])[0].metadata_list)
    return False
