"""Model registry: versions, aliases, integrity and scikit-learn version checks."""

from __future__ import annotations

import hashlib
import io
import json
import pathlib
import pickle
import re
import shutil
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
import sklearn
from apache_beam.io.filesystems import FileSystems

from models.registry import (
    ModelIntegrityError,
    ModelRegistry,
    RegistryError,
    SklearnVersionMismatch,
)
from models.unpickle import Policy

PRE = {"nfkc": True}
# The test models are classes of this module: trusted by name, like a user's own.
TRUST = Policy([f"{__name__}.{c}" for c in ("TinyModel", "NoProba", "ProbaNeedsNumbers")])


class TinyModel:
    """Smallest thing the registry accepts: classes_ and predict_proba(texts)."""

    def __init__(self, tag: int = 0):
        self.tag = tag
        self.classes_ = np.array(["x", "y"])

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        p = np.array([(len(t) + self.tag) % 10 / 10 for t in texts])
        return np.column_stack([p, 1 - p])


class NoProba:
    classes_ = np.array(["x", "y"])

    def predict(self, texts: list[str]) -> list[str]:
        return ["x"] * len(texts)


class ProbaNeedsNumbers(TinyModel):
    def predict_proba(self, texts: list[str]) -> np.ndarray:
        return np.asarray(texts, dtype=float)  # raises on real texts


class MarkerOnUnpickle:
    """Unpickling this object creates ``marker``: the stand-in for hostile code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self) -> Any:
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def _model_path(root: str, name: str, version: str) -> Path:
    return Path(root) / name / version / "model.joblib"


def _meta_path(root: str, name: str, version: str) -> Path:
    return Path(root) / name / version / "metadata.json"


def test_register_increments_versions_and_records_checksum(tmp_path: Path) -> None:
    reg = ModelRegistry(str(tmp_path))
    refs = [reg.register("m", TinyModel(i), preprocessing=PRE, source="t", policy=TRUST)
            for i in range(11)]
    assert [r.version for r in refs] == [str(i) for i in range(1, 12)]
    assert reg.versions("m") == [str(i) for i in range(1, 12)]  # numeric, not lexical order
    assert reg.names() == ["m"]
    for ref in refs:
        data = _model_path(str(tmp_path), "m", ref.version).read_bytes()
        assert ref.sha256 == hashlib.sha256(data).hexdigest()
        meta = reg.metadata("m", ref.version)
        assert meta["sha256"] == ref.sha256
        assert meta["sklearn_version"] == sklearn.__version__
        assert meta["classes"] == ["x", "y"]
        assert meta["preprocessing"] == PRE


def test_the_first_version_is_production_and_later_ones_wait_for_promotion(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    reg = ModelRegistry(str(tmp_path))
    for i in range(10):
        reg.register("m", TinyModel(i), preprocessing=PRE, source="t", policy=TRUST)
    assert reg.aliases("m") == {"production": "1"}
    assert reg.resolve("m").version == "1"           # candidates 2..10 are not scored
    (tmp_path / "m" / "aliases.json").unlink()
    assert reg.resolve("m").version == "10"          # no alias at all: the newest, warned
    assert "no production alias" in caplog.text and "models promote m" in caplog.text
    reg.promote("m", "3")
    assert reg.aliases("m") == {"production": "3"}
    assert reg.resolve("m").version == "3"           # production alias wins
    reg.register("m", TinyModel(99), preprocessing=PRE, source="t", policy=TRUST)
    assert reg.resolve("m").version == "3"           # a new version is not auto-promoted
    assert reg.resolve("m:7").version == "7"         # NAME:VERSION is exact
    ref = reg.resolve("m:11")
    assert ref.metadata["version"] == "11" and ref.sha256 == reg.metadata("m", "11")["sha256"]


@pytest.mark.parametrize("spec", ["m:99", "nosuch", "nosuch:1"])
def test_resolve_unknown_model_or_version_fails_clearly(tmp_path: Path, spec: str) -> None:
    reg = ModelRegistry(str(tmp_path))
    reg.register("m", TinyModel(), preprocessing=PRE, source="t", policy=TRUST)
    with pytest.raises(RegistryError) as exc:
        reg.resolve(spec)
    assert spec.split(":")[0] in str(exc.value)


@pytest.mark.parametrize("name", ["../escape", "a/b", "", ".hidden", "x" * 101])
def test_invalid_model_names_are_rejected(tmp_path: Path, name: str) -> None:
    with pytest.raises(RegistryError, match="invalid model name"):
        ModelRegistry(str(tmp_path)).register(name, TinyModel(), preprocessing=PRE,
                                              source="t", policy=TRUST)


def test_promote_unknown_version_fails_and_keeps_alias(tmp_path: Path) -> None:
    reg = ModelRegistry(str(tmp_path))
    reg.register("m", TinyModel(), preprocessing=PRE, source="t", policy=TRUST)
    reg.promote("m", "1")
    with pytest.raises(RegistryError):
        reg.promote("m", "2")
    assert reg.aliases("m") == {"production": "1"}


def test_incomplete_version_without_metadata_is_invisible(tmp_path: Path) -> None:
    reg = ModelRegistry(str(tmp_path))
    reg.register("m", TinyModel(), preprocessing=PRE, source="t", policy=TRUST)
    half = _model_path(str(tmp_path), "m", "2")
    half.parent.mkdir()
    half.write_bytes(b"half-written upload")
    assert reg.versions("m") == ["1"]
    assert reg.resolve("m").version == "1"


def test_load_round_trips_the_model(registry_root: str, model_ref: Any,
                                    trained_model: Any) -> None:
    model = ModelRegistry(registry_root).load(model_ref)
    texts = ["invoice charge refund", "parcel courier late", "app crash on login"]
    np.testing.assert_allclose(model.predict_proba(texts), trained_model.predict_proba(texts))


def test_appended_byte_is_refused(registry_copy: str) -> None:
    reg = ModelRegistry(registry_copy)
    ref = reg.resolve("demo")
    with open(_model_path(registry_copy, "demo", ref.version), "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(ModelIntegrityError, match="sha256"):
        reg.load(ref)
    with pytest.raises(ModelIntegrityError):
        reg.load(ref, allow_sklearn_mismatch=True)


def test_swapped_pickle_is_refused_before_unpickling(registry_copy: str, tmp_path: Path) -> None:
    # Control: this payload really does run code when unpickled.
    control = tmp_path / "control-marker"
    joblib.load(io.BytesIO(pickle.dumps(MarkerOnUnpickle(control))))
    assert control.exists(), "the crafted pickle must be able to create its marker"

    marker = tmp_path / "marker"
    reg = ModelRegistry(registry_copy)
    ref = reg.resolve("demo")
    _model_path(registry_copy, "demo", ref.version).write_bytes(
        pickle.dumps(MarkerOnUnpickle(marker)))
    with pytest.raises(ModelIntegrityError):
        reg.load(ref, allow_sklearn_mismatch=True)
    assert not marker.exists(), "the artifact was unpickled before its checksum was verified"


def test_swapped_pickle_is_refused_even_after_re_resolving(registry_copy: str,
                                                           tmp_path: Path) -> None:
    """The checksum comes from metadata.json, so a fresh resolve does not bless the swap."""
    marker = tmp_path / "marker"
    reg = ModelRegistry(registry_copy)
    _model_path(registry_copy, "demo", "1").write_bytes(pickle.dumps(MarkerOnUnpickle(marker)))
    with pytest.raises(ModelIntegrityError):
        reg.load(reg.resolve("demo:1"))
    assert not marker.exists()


def test_sklearn_version_mismatch_is_refused_unless_allowed(registry_copy: str,
                                                            trained_model: Any) -> None:
    meta_path = _meta_path(registry_copy, "demo", "1")
    meta = json.loads(meta_path.read_text())
    meta["sklearn_version"] = "0.24.2"
    meta_path.write_text(json.dumps(meta))  # sha256 of model.joblib is untouched
    reg = ModelRegistry(registry_copy)
    ref = reg.resolve("demo")
    with pytest.raises(SklearnVersionMismatch) as exc:
        reg.load(ref)
    assert "0.24.2" in str(exc.value) and sklearn.__version__ in str(exc.value)
    model = reg.load(ref, allow_sklearn_mismatch=True)
    texts = ["refund for a double charge"]
    np.testing.assert_allclose(model.predict_proba(texts), trained_model.predict_proba(texts))


def test_register_file_adopts_a_working_classifier(tmp_path: Path) -> None:
    path = tmp_path / "handover.joblib"
    joblib.dump(TinyModel(3), path)
    reg = ModelRegistry(str(tmp_path / "reg"))
    ref = reg.register_file("adopted", str(path), preprocessing=PRE, policy=TRUST)
    assert ref.version == "1"
    assert ref.metadata["source"] == f"file:{path}"
    assert ref.metadata["trusted_types"] == sorted(TRUST.trusted_types)
    assert f"{__name__}.TinyModel" in ref.metadata["globals"]
    loaded = reg.load(ref, policy=TRUST)
    assert loaded.predict_proba(["abc"]).tolist() == TinyModel(3).predict_proba(["abc"]).tolist()


@pytest.mark.parametrize("obj, match", [
    (NoProba(), "predict_proba"),
    ({"not": "a model"}, "predict_proba"),
    (ProbaNeedsNumbers(), "failed"),
])
def test_register_file_rejects_unusable_objects(tmp_path: Path, obj: Any, match: str) -> None:
    path = tmp_path / "handover.joblib"
    joblib.dump(obj, path)
    reg = ModelRegistry(str(tmp_path / "reg"))
    with pytest.raises(RegistryError, match=match):
        reg.register_file("adopted", str(path), preprocessing=PRE, policy=TRUST)
    assert reg.versions("adopted") == []


def test_register_rejects_model_without_predict_proba(tmp_path: Path) -> None:
    reg = ModelRegistry(str(tmp_path))
    with pytest.raises(RegistryError, match="predict_proba"):
        reg.register("m", NoProba(), preprocessing=PRE, source="t", policy=TRUST)
    assert reg.versions("m") == []


@pytest.mark.parametrize("version", ["1/../1", "../1", "0", "01", "-1", "1.0", "1 ", "²"])
def test_promote_refuses_a_version_that_is_not_a_positive_integer(
        registry_copy: str, version: str) -> None:
    registry = ModelRegistry(registry_copy)
    with pytest.raises(RegistryError, match="invalid model version"):
        registry.promote("demo", version)
    assert registry.aliases("demo") == {"production": "1"}


@pytest.mark.parametrize("alias", ["Production", "prod/../x", "1", "_x", "a b", ""])
def test_promote_refuses_an_alias_that_is_not_a_lower_case_name(
        registry_copy: str, alias: str) -> None:
    with pytest.raises(RegistryError, match="invalid alias"):
        ModelRegistry(registry_copy).promote("demo", "1", alias)


@pytest.mark.parametrize("aliases", [{"production": "1/../1"}, {"production": 1},
                                     {"../x": "1"}, ["1"]])
def test_an_aliases_file_with_a_bad_entry_is_refused_naming_it(
        registry_copy: str, aliases: Any) -> None:
    (Path(registry_copy) / "demo" / "aliases.json").write_text(json.dumps(aliases))
    with pytest.raises(RegistryError, match="aliases.json"):
        ModelRegistry(registry_copy).resolve("demo")


def test_a_metadata_file_recording_another_version_is_refused(registry_copy: str) -> None:
    meta_path = Path(registry_copy) / "demo" / "1" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps(meta | {"version": "1/../1"}))
    with pytest.raises(RegistryError, match="records version"):
        ModelRegistry(registry_copy).resolve("demo:1")


@pytest.mark.parametrize("spec", ["demo:1/../1", "demo:../1", "demo:Prod"])
def test_a_model_spec_with_a_bad_version_or_alias_is_refused(registry_root: str,
                                                             spec: str) -> None:
    with pytest.raises(RegistryError, match="invalid"):
        ModelRegistry(registry_root).resolve(spec)


def test_version_folders_that_are_not_positive_integers_are_not_versions(
        registry_copy: str) -> None:
    for odd in ("01", "0"):
        shutil.copytree(Path(registry_copy) / "demo" / "1", Path(registry_copy) / "demo" / odd)
    assert ModelRegistry(registry_copy).versions("demo") == ["1"]


@pytest.mark.parametrize("damage", [b'{"name": "demo", "vers', b"\xff\xfe", b"[1, 2]"])
def test_a_damaged_metadata_file_is_refused_naming_it(registry_copy: str, damage: bytes
                                                      ) -> None:
    meta = Path(registry_copy) / "demo" / "1" / "metadata.json"
    meta.write_bytes(damage)
    with pytest.raises(RegistryError, match=re.escape(str(meta))):
        ModelRegistry(registry_copy).resolve("demo:1")


def test_a_damaged_aliases_file_is_refused_naming_it(registry_copy: str) -> None:
    aliases = Path(registry_copy) / "demo" / "aliases.json"
    aliases.write_text('{"production": "1",')
    with pytest.raises(RegistryError, match=re.escape(str(aliases))):
        ModelRegistry(registry_copy).resolve("demo")


def test_an_interrupted_write_leaves_no_half_file(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A write that fails part way (a full disk) leaves the registry as it was: no
    version, no alias, no temporary file."""
    reg = ModelRegistry(str(tmp_path))
    reg.register("m", TinyModel(), preprocessing=PRE, source="t", policy=TRUST)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    real_create = FileSystems.create

    class _HalfWritten:  # writes half of what it is given, then the disk is full
        def __init__(self, handle: Any) -> None:
            self.handle = handle

        def __enter__(self) -> Any:
            return self

        def __exit__(self, *exc: object) -> None:
            self.handle.close()

        def write(self, data: bytes) -> None:
            self.handle.write(data[:len(data) // 2])
            raise OSError(28, "No space left on device")

    def failing_create(path: str, *args: Any, **kwargs: Any) -> Any:
        handle = real_create(path, *args, **kwargs)
        return _HalfWritten(handle) if ".json" in path else handle

    monkeypatch.setattr(FileSystems, "create", failing_create)
    with pytest.raises(OSError):
        reg.promote("m", "1", "staging")
    with pytest.raises(OSError):
        reg.register("m", TinyModel(1), preprocessing=PRE, source="t", policy=TRUST)
    monkeypatch.undo()
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert [p for p in after if ".tmp-" in p.name] == []
    assert reg.versions("m") == ["1"] and reg.aliases("m") == {"production": "1"}
    assert set(before) <= set(after)


def test_a_version_written_as_a_number_in_aliases_is_explained(registry_copy: str) -> None:
    (Path(registry_copy) / "demo" / "aliases.json").write_text('{"production": 1}')
    with pytest.raises(RegistryError, match=r"versions are written as strings \(\"1\"\)"):
        ModelRegistry(registry_copy).resolve("demo")


def test_a_number_claimed_by_a_registration_under_way_is_not_taken(tmp_path: Path) -> None:
    """Version 2 claimed by another training still writing it (or one that died): the
    next registration is version 3; version 2 stays invisible until its metadata."""
    reg = ModelRegistry(str(tmp_path))
    reg.register("m", TinyModel(), preprocessing=PRE, source="t", policy=TRUST)
    (tmp_path / "m" / "2").mkdir()
    (tmp_path / "m" / "2" / ".claimed").touch()
    ref = reg.register("m", TinyModel(1), preprocessing=PRE, source="t", policy=TRUST)
    assert ref.version == "3" and reg.versions("m") == ["1", "3"]
    assert reg.aliases("m") == {"production": "1"}


def test_two_registrations_finishing_together_get_two_versions(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both list the versions before either writes (the race of two trainings that end
    together): each still gets its own number and its own artifact."""
    import threading

    reg = ModelRegistry(str(tmp_path))
    listed = threading.Barrier(2, timeout=10)
    real_versions = ModelRegistry.versions

    def versions_then_wait(self: ModelRegistry, name: str) -> list[str]:
        found = real_versions(self, name)
        listed.wait()  # both have listed: both would pick the same number
        return found

    monkeypatch.setattr(ModelRegistry, "versions", versions_then_wait)
    refs: dict[int, Any] = {}

    def register(seed: int) -> None:
        refs[seed] = reg.register("m", TinyModel(seed), preprocessing=PRE, source="t",
                                  policy=TRUST)

    threads = [threading.Thread(target=register, args=(seed,)) for seed in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    monkeypatch.undo()
    assert sorted(r.version for r in refs.values()) == ["1", "2"]
    for ref in refs.values():
        data = _model_path(str(tmp_path), "m", ref.version).read_bytes()
        assert hashlib.sha256(data).hexdigest() == reg.metadata("m", ref.version)["sha256"]


def test_a_gcs_claim_is_an_upload_that_only_succeeds_where_no_object_is(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """On gs:// the number is claimed with ``if_generation_match=0``; a claim that the
    server refuses (412) is a number taken. (The offline emulator ignores the
    precondition, so the request is checked here.)"""
    from apache_beam.io.gcp import gcsio
    from google.api_core.exceptions import PreconditionFailed

    from models.registry import _claim

    uploads: list[tuple[str, dict[str, Any]]] = []

    class _Blob:
        def __init__(self, name: str) -> None:
            self.name = name

        def upload_from_string(self, data: bytes, **kwargs: Any) -> None:
            uploads.append((self.name, kwargs))
            if self.name.endswith("/2/.claimed"):
                raise PreconditionFailed("At least one of the pre-conditions did not hold")

    class _Client:
        def bucket(self, name: str) -> Any:
            return type("B", (), {"blob": lambda _self, n: _Blob(n)})()

    monkeypatch.setattr(gcsio, "GcsIO", lambda *a, **k: type("G", (), {"client": _Client()})())
    assert _claim("gs://bucket/registry/m/3/.claimed") is True
    assert _claim("gs://bucket/registry/m/2/.claimed") is False
    assert uploads == [("registry/m/3/.claimed", {"if_generation_match": 0}),
                       ("registry/m/2/.claimed", {"if_generation_match": 0})]


def test_concurrent_promotions_never_undo_each_other(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Eight promotions at once, each of another alias, each slow to write: every alias
    is in aliases.json afterwards (a read-modify-write without the lock loses most)."""
    import threading
    import time

    import models.registry as registry

    reg = ModelRegistry(str(tmp_path))
    reg.register("m", TinyModel(), preprocessing=PRE, source="t", policy=TRUST)
    real_write = registry._write_bytes

    def slow_write(path: str, data: bytes) -> None:
        time.sleep(0.05)
        real_write(path, data)

    monkeypatch.setattr(registry, "_write_bytes", slow_write)
    threads = [threading.Thread(target=reg.promote, args=("m", "1", f"alias{i}"))
               for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert reg.aliases("m") == {"production": "1"} | {f"alias{i}": "1" for i in range(8)}


def test_unless_set_promotes_only_an_alias_that_names_no_version(tmp_path: Path) -> None:
    """What a first registration does last: a production alias another registration set
    meanwhile is kept."""
    reg = ModelRegistry(str(tmp_path))
    for seed in (1, 2):
        reg.register("m", TinyModel(seed), preprocessing=PRE, source="t", policy=TRUST)
    reg.promote("m", "2", unless_set=True)
    reg.promote("m", "2", "staging", unless_set=True)
    assert reg.aliases("m") == {"production": "1", "staging": "2"}


def test_a_registry_without_aliases_gets_no_production_from_a_later_version(
        tmp_path: Path) -> None:
    """Versions 1 and 2 registered before aliases.json existed: version 3 is a candidate
    like any later version, not production."""
    reg = ModelRegistry(str(tmp_path))
    for seed in (1, 2):
        reg.register("m", TinyModel(seed), preprocessing=PRE, source="t", policy=TRUST)
    (tmp_path / "m" / "aliases.json").unlink()
    reg.register("m", TinyModel(3), preprocessing=PRE, source="t", policy=TRUST)
    assert reg.aliases("m") == {}


def test_a_first_registration_that_died_leaves_production_to_the_next_one(
        tmp_path: Path) -> None:
    """Version 1 claimed but never completed (its process died): version 2 is the name's
    first complete version and becomes production; version 3 is a candidate."""
    reg = ModelRegistry(str(tmp_path))
    (tmp_path / "m" / "1").mkdir(parents=True)
    (tmp_path / "m" / "1" / ".claimed").touch()
    assert reg.register("m", TinyModel(1), preprocessing=PRE, source="t",
                        policy=TRUST).version == "2"
    reg.register("m", TinyModel(2), preprocessing=PRE, source="t", policy=TRUST)
    assert reg.aliases("m") == {"production": "2"}
    assert reg.resolve("m").version == "2"


def test_a_folder_that_is_no_model_name_is_skipped_when_listing(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    reg = ModelRegistry(str(tmp_path))
    reg.register("m", TinyModel(1), preprocessing=PRE, source="t", policy=TRUST)
    backup = tmp_path / "old model (backup)" / "1"
    backup.mkdir(parents=True)
    (backup / "metadata.json").write_text((tmp_path / "m" / "1" / "metadata.json").read_text())
    assert reg.names() == ["m"]
    assert "skipping folder 'old model (backup)'" in caplog.text


class HangsOnPredict(TinyModel):
    def predict_proba(self, texts: list[str]) -> np.ndarray:
        import time

        time.sleep(3600)
        return super().predict_proba(texts)


class CrashesOnPredict(TinyModel):
    def predict_proba(self, texts: list[str]) -> np.ndarray:
        import os
        import signal

        os.kill(os.getpid(), signal.SIGSEGV)  # as a native library's bad pointer would
        return super().predict_proba(texts)


SMOKE = Policy([*TRUST.trusted_types, f"{__name__}.HangsOnPredict",
                f"{__name__}.CrashesOnPredict"])


@pytest.mark.parametrize("obj, match", [
    (HangsOnPredict(3), r"did not return within 0\.5 s on a one-text smoke test"),
    (CrashesOnPredict(3), r"crashed its process on a one-text smoke test \(signal SIGSEGV, "
                          r"a crash\); not registered"),
])
def test_register_file_refuses_a_model_that_hangs_or_crashes_its_smoke_test(
        tmp_path: Path, obj: Any, match: str) -> None:
    """The smoke test runs in a child process with a time bound: this process lives on."""
    path = tmp_path / "handover.joblib"
    joblib.dump(obj, path)
    reg = ModelRegistry(str(tmp_path / "reg"))
    with pytest.raises(RegistryError, match=match) as refused:
        reg.register_file("adopted", str(path), preprocessing=PRE, policy=SMOKE,
                          smoke_seconds=0.5)
    assert str(refused.value).startswith(f"{path}: ")
    assert reg.versions("adopted") == []


class CrashesAfterOneText(TinyModel):
    """Answers the one-text smoke test; crashes its process on more texts at once."""

    def predict_proba(self, texts: Any) -> Any:
        import os
        import signal

        if len(texts) > 1:
            os.kill(os.getpid(), signal.SIGSEGV)
        return super().predict_proba(texts)


def test_the_reference_profile_of_a_registered_file_runs_apart_too(tmp_path: Path) -> None:
    """``--reference`` scores a sample with the model's code: a model that crashes
    there costs a child process, not the command, and the file is refused unregistered."""
    path = tmp_path / "handover.joblib"
    joblib.dump(CrashesAfterOneText(3), path)
    reg = ModelRegistry(str(tmp_path / "reg"))
    policy = Policy([*TRUST.trusted_types, f"{__name__}.CrashesAfterOneText"])

    def profile(model: Any) -> dict[str, bytes]:
        model.predict_proba(["a text", "another"])
        return {"profile.json": b"{}"}

    with pytest.raises(RegistryError, match=r"its reference profile crashed its process "
                                            r"\(signal SIGSEGV, a crash\); not registered"):
        reg.register_file("adopted", str(path), preprocessing=PRE, policy=policy,
                          reference=profile)
    assert reg.versions("adopted") == []
    ref = reg.register_file("kept", str(path), preprocessing=PRE, policy=policy,
                            reference=lambda model: {"profile.json": b"{}"})
    assert reg.file_path(ref, "profile.json")
