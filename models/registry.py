"""Model registry: versioned scikit-learn artifacts with verified checksums.

Layout, on a local path or ``gs://`` (everything goes through Beam's FileSystems)::

    <registry>/<name>/<version>/model.joblib
    <registry>/<name>/<version>/metadata.json   # sha256, sklearn version, classes, ...
    <registry>/<name>/aliases.json              # {"production": "3"}

Versions are positive integers (``1``, ``2``, ...) and aliases lower-case names
(``[a-z][a-z0-9_-]*``, e.g. ``production``); both are checked wherever they are read
(the command line, ``aliases.json``, ``metadata.json``, a registry folder on gs://), so
neither can name a path outside the model's folder. ``NAME`` alone means the version
aliased ``production``: a name's first version to complete its registration becomes it,
a later version only when promoted, so a retraining candidate is never scored until someone
promotes it. A registration first claims its version's number (``.claimed``, created
only where none is: two trainings finishing together get two versions, never one), then
writes every file whole or not at all, ``metadata.json`` last, so a version without it
is incomplete and invisible (its number is not used again); a registry file that is not readable
JSON is refused naming it. A model artifact is a pickle, i.e. code:
``verify`` is the one place that checks an artifact's bytes (its sha256 against the
registry's record, its scikit-learn version against the installed one); the launcher
calls it before any worker starts, and ``load`` calls it again on every worker, then
unpickles with the restricted unpickler of ``models.unpickle``. The checksum protects
against corruption; the restricted unpickler against someone who can write to the
registry (who can rewrite metadata.json too): an artifact that names a global outside
scikit-learn, numpy, scipy and the types the operator trusts is refused before any of
it runs. The metadata records the globals an artifact needs.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import glob
import hashlib
import importlib.metadata
import io
import json
import logging
import os
import pickle
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from apache_beam.io.filesystems import FileSystems

from models.deadline import call_with_deadline
from models.unpickle import Policy, UntrustedGlobal, load_restricted

MODEL_FILE = "model.joblib"
METADATA_FILE = "metadata.json"
ALIASES_FILE = "aliases.json"
CLAIM_FILE = ".claimed"  # a version's number, taken by the registration writing it
PRODUCTION = "production"  # the alias ``NAME`` alone resolves to
SMOKE_TEST_SECONDS = 60.0  # a registered file's predict_proba on one text, at most
T = TypeVar("T")
REFERENCE_SECONDS = 1800.0  # its reference profile (--reference: a sample scored), at most
_LOG = logging.getLogger("beamscore")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_VERSION = re.compile(r"^[1-9][0-9]{0,17}$")
_ALIAS = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")


class RegistryError(Exception):
    """A model or version is missing, or a request is malformed."""


class ModelIntegrityError(RegistryError):
    """The artifact does not match the registry's checksum: it is never unpickled."""


class SklearnVersionMismatch(RegistryError):
    """The artifact was written by another scikit-learn version."""


@dataclass(frozen=True)
class ModelRef:
    """A resolved model version, fixed at launch so every worker scores with it."""

    name: str
    version: str
    sha256: str
    metadata: dict[str, Any]


def _join(*parts: str) -> str:
    return FileSystems.join(*parts) if parts[0].startswith("gs://") else "/".join(
        [parts[0].rstrip("/"), *parts[1:]]
    )


def _read_bytes(path: str) -> bytes:
    with FileSystems.open(path) as fh:
        return fh.read()


def _read_json(path: str, data: bytes | None = None, fix: str = "register the version again"
               ) -> Any:
    """A registry JSON file's content (``data``, else read from ``path``), or
    ``RegistryError`` naming the file and saying how to ``fix`` it."""
    try:
        return json.loads(_read_bytes(path) if data is None else data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RegistryError(f"{path}: not a readable JSON file ({exc}); restore it or "
                            f"{fix}") from exc


def _aliases(path: str, data: bytes) -> dict[str, str]:
    """``aliases.json``'s content, every alias and version checked."""
    found = _read_json(path, data, "promote again")
    if not isinstance(found, dict):
        raise RegistryError(f"{path}: expected an object of alias -> version")
    return {check_alias(alias, path): check_version(version, f"{path}, alias {alias}")
            for alias, version in found.items()}


def _update(path: str, change: Callable[[bytes | None], bytes | None]) -> None:
    """Replace the file at ``path`` with ``change(its content, or None)`` (None: leave
    it), no other writer in between: locally under an exclusive lock of
    ``<path>.lock``; on GCS an upload that succeeds only while the object is still the
    generation read (tried again when another writer came first)."""
    if path.startswith("gs://"):
        from apache_beam.io.gcp import gcsio
        from google.api_core.exceptions import NotFound, PreconditionFailed

        make_gcsio = getattr(FileSystems.get_filesystem(path), "_gcsIO", gcsio.GcsIO)
        bucket_name, name = gcsio.parse_gcs_path(path)
        bucket = make_gcsio().client.bucket(bucket_name)
        for _ in range(20):
            blob = bucket.get_blob(name)
            generation = blob.generation if blob is not None else 0
            try:
                current = (blob.download_as_bytes(if_generation_match=generation)
                           if blob is not None else None)
                new = change(current)
                if new is not None:
                    bucket.blob(name).upload_from_string(new, if_generation_match=generation)
                return
            except (PreconditionFailed, NotFound):
                continue  # another writer came first: read again
        raise RegistryError(f"{path}: changed by other writers 20 times in a row; try again")
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(f"{path}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        current = _read_bytes(path) if os.path.exists(path) else None
        new = change(current)
        if new is not None:
            _write_bytes(path, new)


def _claim(path: str) -> bool:
    """Create ``path`` empty unless it exists (atomically: ``O_EXCL`` locally, an upload
    that only succeeds where no object is on GCS); whether this call created it."""
    if path.startswith("gs://"):
        from apache_beam.io.gcp import gcsio
        from google.api_core.exceptions import PreconditionFailed

        make_gcsio = getattr(FileSystems.get_filesystem(path), "_gcsIO", gcsio.GcsIO)
        bucket, name = gcsio.parse_gcs_path(path)
        try:
            make_gcsio().client.bucket(bucket).blob(name).upload_from_string(
                b"", if_generation_match=0)
        except PreconditionFailed:
            return False
        return True
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    except FileExistsError:
        return False
    return True


def _write_bytes(path: str, data: bytes) -> None:
    """Write ``path`` whole or not at all: locally to a temporary name, then renamed (an
    interrupted write leaves no half file under the name); on GCS an upload appears only
    once complete."""
    if path.startswith("gs://"):
        with FileSystems.create(path) as fh:
            fh.write(data)
        return
    tmp = f"{path}.tmp-{secrets.token_hex(6)}"
    try:
        with FileSystems.create(tmp) as fh:
            fh.write(data)
        FileSystems.rename([tmp], [path])
    except BaseException:
        if FileSystems.exists(tmp):
            FileSystems.delete([glob.escape(tmp)])
        raise


class UntrustedArtifact(RegistryError):
    """The artifact names a global outside the allow-list; nothing of it was run."""


def _unpickle(data: bytes, policy: Policy, what: str) -> tuple[Any, list[str]]:
    try:
        return load_restricted(data, policy)
    except UntrustedGlobal as exc:
        raise UntrustedArtifact(f"{what}: {exc}") from exc
    except (pickle.UnpicklingError, EOFError, ValueError, KeyError, IndexError,
            TypeError, AttributeError, ImportError) as exc:
        raise RegistryError(f"{what} is not a joblib or pickle file of a model "
                            f"({type(exc).__name__}: {exc}); save it with joblib.dump") from exc


def installed_sklearn_version() -> str:
    """scikit-learn's version without importing it (a second of start-up on the launcher)."""
    return importlib.metadata.version("scikit-learn")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def parse_model_spec(spec: str) -> tuple[str, str | None]:
    """``NAME``, ``NAME:VERSION`` or ``NAME:ALIAS``."""
    name, _, version = spec.partition(":")
    check_name(name)
    if version and not _VERSION.match(version):
        check_alias(version, f"model {spec!r}")
    return name, version or None


def check_version(version: Any, where: str) -> str:
    """``version`` if it is a positive integer written plainly, else ``RegistryError``
    naming ``where`` it was read."""
    if not isinstance(version, str):
        raise RegistryError(f"{where}: invalid model version {version!r}: versions are "
                            f"written as strings (\"{version}\")")
    if not _VERSION.match(version):
        raise RegistryError(f"{where}: invalid model version {version!r}: a version is a "
                            "positive integer (1, 2, ...)")
    return version


def check_alias(alias: Any, where: str) -> str:
    if not isinstance(alias, str) or not _ALIAS.match(alias):
        raise RegistryError(f"{where}: invalid alias {alias!r}: an alias is a lower-case "
                            "letter followed by lower-case letters, digits, '_' or '-'")
    return alias


def check_name(name: str) -> None:
    if not _NAME.match(name):
        raise RegistryError(
            f"invalid model name {name!r}: use letters, digits, '.', '_' or '-' (max 100)"
        )


class ModelRegistry:
    """Read and write one registry root (local path or gs:// URI)."""

    def __init__(self, root: str):
        self.root = root.rstrip("/")

    # ----------------------------------------------------------------- reading
    def versions(self, name: str) -> list[str]:
        check_name(name)
        pattern = _join(glob.escape(self.root), name, "*", METADATA_FILE)
        found = FileSystems.match([pattern])[0].metadata_list
        versions = {m.path.rstrip("/").split("/")[-2] for m in found}
        return sorted((v for v in versions if _VERSION.match(v)), key=int)

    def names(self) -> list[str]:
        """The models of the registry: folders with a valid model name holding a version
        (another folder, e.g. a backup copy named ``old model (backup)``, is skipped with
        a warning)."""
        pattern = _join(glob.escape(self.root), "*", "*", METADATA_FILE)
        found = FileSystems.match([pattern])[0].metadata_list
        folders = sorted({m.path.rstrip("/").split("/")[-3] for m in found})
        for other in [f for f in folders if not _NAME.match(f)]:
            _LOG.warning("registry %s: skipping folder %r: not a model name (letters, "
                         "digits, '.', '_' or '-')", self.root, other)
        return [f for f in folders if _NAME.match(f)]

    def aliases(self, name: str) -> dict[str, str]:
        path = _join(self.root, name, ALIASES_FILE)
        if not FileSystems.exists(path):
            return {}
        return _aliases(path, _read_bytes(path))

    def metadata(self, name: str, version: str) -> dict[str, Any]:
        check_name(name)
        check_version(version, f"model {name}")
        path = _join(self.root, name, version, METADATA_FILE)
        if not FileSystems.exists(path):
            raise RegistryError(f"model {name} version {version} not found in {self.root}")
        data = _read_json(path)
        if not isinstance(data, dict):
            raise RegistryError(f"{path}: expected an object (the version's metadata)")
        if str(data.get("version")) != version:
            raise RegistryError(f"{path} records version {data.get('version')!r}, not the "
                                f"version of its folder ({version})")
        return data

    def resolve(self, spec: str) -> ModelRef:
        """``NAME:VERSION`` exactly, ``NAME:ALIAS`` (e.g. ``NAME:production``) the version
        the alias names; ``NAME`` = alias ``production`` (a name's first version becomes it
        when registered, ``promote`` moves it), else the newest, with a warning."""
        name, version = parse_model_spec(spec)
        if version is not None and not _VERSION.match(version):
            alias = version
            version = self.aliases(name).get(alias)
            if version is None:
                raise RegistryError(f"model {name} has no alias {alias!r} in {self.root} "
                                    f"(aliases: {sorted(self.aliases(name)) or 'none'})")
        if version is None:
            version = self.aliases(name).get(PRODUCTION)
        if version is None:
            versions = self.versions(name)
            if not versions:
                raise RegistryError(
                    f"no versions of model {name!r} in registry {self.root}; "
                    "train one with `beamscore train` or add one with `beamscore models register`"
                )
            version = versions[-1]
            if len(versions) > 1:
                _LOG.warning("model %s has no %s alias in %s: using its newest version, %s; "
                             "`beamscore models promote %s VERSION` names the one to score "
                             "with", name, PRODUCTION, self.root, version, name)
        meta = self.metadata(name, version)
        return ModelRef(name=name, version=version, sha256=meta["sha256"], metadata=meta)

    def read_file(self, ref: ModelRef, filename: str) -> bytes | None:
        """A file stored beside a version's artifact (e.g. ``profile.json``), or None."""
        path = _join(self.root, ref.name, ref.version, filename)
        return _read_bytes(path) if FileSystems.exists(path) else None

    def file_path(self, ref: ModelRef, filename: str) -> str:
        return _join(self.root, ref.name, ref.version, filename)

    def artifact_path(self, ref: ModelRef) -> str:
        return _join(self.root, ref.name, ref.version, MODEL_FILE)

    def verify(self, ref: ModelRef, allow_sklearn_mismatch: bool = False) -> bytes:
        """The artifact's bytes, after checking them against the registry's sha256 and
        the recorded scikit-learn version against the installed one. Never unpickles."""
        path = self.artifact_path(ref)
        data = _read_bytes(path)
        actual = sha256_hex(data)
        if actual != ref.sha256:
            raise ModelIntegrityError(
                f"model {ref.name}:{ref.version} failed verification: sha256 of {path} is "
                f"{actual}, the registry records {ref.sha256}; refusing to load an altered "
                "or corrupted artifact"
            )
        recorded = ref.metadata.get("sklearn_version")
        installed = installed_sklearn_version()
        if recorded != installed and not allow_sklearn_mismatch:
            raise SklearnVersionMismatch(
                f"model {ref.name}:{ref.version} was saved with scikit-learn {recorded}, "
                f"this installation has {installed}; retrain or register it again, or set "
                "inference.allow_sklearn_mismatch to load it anyway"
            )
        return data

    def load(self, ref: ModelRef, allow_sklearn_mismatch: bool = False,
             policy: Policy | None = None) -> Any:
        """Verify (``verify``), then unpickle under ``policy`` (``models.unpickle``; the
        default allows scikit-learn, numpy and scipy only). Never the other way round."""
        data = self.verify(ref, allow_sklearn_mismatch)
        return _unpickle(data, policy or Policy(), f"model {ref.name}:{ref.version}")[0]

    # ----------------------------------------------------------------- writing
    def register(
        self,
        name: str,
        model: Any,
        *,
        preprocessing: dict[str, Any],
        source: str,
        metrics: dict[str, Any] | None = None,
        extra: dict[str, Any] | None = None,
        policy: Policy | None = None,
        files: dict[str, bytes] | None = None,
    ) -> ModelRef:
        """Store a fitted model as the next version of ``name``; it must load under
        ``policy`` (the globals it needs are recorded in the metadata). ``files`` (e.g.
        the reference profile) are stored beside it, before the metadata."""
        check_name(name)
        if not hasattr(model, "predict_proba"):
            raise RegistryError("model has no predict_proba(texts); cannot be used for scoring")
        import joblib

        buf = io.BytesIO()
        joblib.dump(model, buf, compress=3)
        data = buf.getvalue()
        policy = policy or Policy()
        _, globals_used = _unpickle(data, policy, f"model {name}")
        existing = self.versions(name)
        number = int(existing[-1]) + 1 if existing else 1
        while not _claim(_join(self.root, name, str(number), CLAIM_FILE)):
            number += 1  # taken by a registration under way (or one that died)
        version = str(number)
        meta = _metadata(name, version, model, data, preprocessing, source, metrics,
                         globals_used, policy) | (extra or {})
        _write_bytes(_join(self.root, name, version, MODEL_FILE), data)
        for filename, content in (files or {}).items():
            _write_bytes(_join(self.root, name, version, filename), content)
        _write_bytes(
            _join(self.root, name, version, METADATA_FILE),
            json.dumps(meta, indent=2, sort_keys=True).encode(),
        )
        if not existing:  # the name had no complete version: production until another
            # is promoted (version 1, or the next if version 1's registration died)
            self.promote(name, version, unless_set=True)
        return ModelRef(name=name, version=version, sha256=meta["sha256"], metadata=meta)

    def register_file(
        self, name: str, path: str, *, preprocessing: dict[str, Any],
        extra: dict[str, Any] | None = None, policy: Policy | None = None,
        reference: Callable[[Any], dict[str, bytes]] | None = None,
        smoke_seconds: float = SMOKE_TEST_SECONDS,
        reference_seconds: float = REFERENCE_SECONDS,
    ) -> ModelRef:
        """Adopt a joblib file handed over by a data scientist, loaded under ``policy``
        like any artifact: a file that names untrusted globals is refused unrun, and one
        whose ``predict_proba`` fails, hangs or crashes its process on one text
        (``smoke_test``) is refused.
        ``reference(model)`` gives the files to store beside it (its reference profile);
        it runs the model's code on many texts, so it runs apart as the smoke test does,
        in a child process killed after ``reference_seconds``."""
        policy = policy or Policy()
        model, _ = _unpickle(_read_bytes(path), policy, path)
        if not hasattr(model, "predict_proba"):
            raise RegistryError(f"{path}: object has no predict_proba; not a usable classifier")
        smoke_test(model, path, smoke_seconds)
        files = _apart(lambda: reference(model), path, "its reference profile",
                       reference_seconds) if reference else None
        return self.register(name, model, preprocessing=preprocessing, source=f"file:{path}",
                             extra=extra, policy=policy, files=files)

    def promote(self, name: str, version: str, alias: str = PRODUCTION, *,
                unless_set: bool = False) -> None:
        """Alias ``version`` as ``alias`` (``unless_set``: only where the alias names no
        version yet). ``aliases.json`` is read and rewritten by one writer at a time
        (``_update``), so concurrent promotions never undo each other."""
        check_alias(alias, f"model {name}")
        self.metadata(name, version)  # raises if invalid or absent
        path = _join(self.root, name, ALIASES_FILE)

        def change(current: bytes | None) -> bytes | None:
            aliases = _aliases(path, current) if current is not None else {}
            if unless_set and alias in aliases:
                return None
            return json.dumps(aliases | {alias: version}, indent=2).encode()

        _update(path, change)


def _apart(fn: Callable[[], T], path: str, what: str, seconds: float) -> T:
    """``fn()`` run in a child process killed after ``seconds`` (``models.deadline``):
    the model's code that fails, hangs or crashes costs the child, and the file is
    refused with a ``RegistryError`` saying so."""
    outcome = call_with_deadline(fn, seconds)
    if outcome.status == "timeout":
        raise RegistryError(f"{path}: {what} took longer than {seconds:.3g} s (the model "
                            "hangs or is far too slow); not registered")
    if outcome.status == "died":
        raise RegistryError(f"{path}: {what} crashed its process ({outcome.ended}); "
                            "not registered")
    if outcome.status != "ok":
        raise RegistryError(f"{path}: {what} failed: {outcome.message}; not registered")
    value: T = outcome.value
    return value


def smoke_test(model: Any, path: str, seconds: float = SMOKE_TEST_SECONDS) -> None:
    """``model.predict_proba`` on one text, in a child process killed after ``seconds``
    (``models.deadline``): third-party code that hangs or crashes its process (a
    segfault from a loaded native state) costs the child, and the file is refused with
    a ``RegistryError`` naming it and what happened."""
    def call() -> tuple[int, ...]:
        import numpy as np

        shape: tuple[int, ...] = np.asarray(
            model.predict_proba(["beamscore registration smoke test"]), dtype=float).shape
        return shape

    outcome = call_with_deadline(call, seconds)
    if outcome.status == "timeout":
        raise RegistryError(f"{path}: predict_proba did not return within {seconds:.3g} s "
                            "on a one-text smoke test (the model hangs or is far too slow); "
                            "not registered")
    if outcome.status == "died":
        raise RegistryError(f"{path}: predict_proba crashed its process on a one-text smoke "
                            f"test ({outcome.ended}); not registered")
    if outcome.status != "ok":
        raise RegistryError(
            f"{path}: predict_proba(list of texts) failed: {outcome.message}. The artifact "
            "must be a scikit-learn pipeline that takes raw texts")


def _metadata(name: str, version: str, model: Any, data: bytes, preprocessing: dict[str, Any],
              source: str, metrics: dict[str, Any] | None, globals_used: list[str],
              policy: Policy) -> dict[str, Any]:
    """A version's ``metadata.json``: what verifies, describes and loads the artifact."""
    classes = [c.item() if hasattr(c, "item") else c for c in getattr(model, "classes_", [])]
    return {
        "name": name,
        "version": version,
        "sha256": sha256_hex(data),
        "size_bytes": len(data),
        "sklearn_version": installed_sklearn_version(),
        "classes": [str(c) for c in classes],
        "preprocessing": preprocessing,
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "source": source,
        "metrics": metrics or {},
        "globals": globals_used,
        "trusted_types": sorted(policy.trusted_types),
        "allow_pickle": policy.allow_pickle,
    }
