"""Layered, typed configuration: ``configs/base.yaml`` + an overlay + CLI flags.

The schema is the dataclass tree below; YAML files and flags are checked against it,
so an unknown or ill-typed key fails with a message naming the key and the file it
came from. Every leaf key gets a CLI flag: ``sink.max_rows_per_second`` is
``--sink-max-rows-per-second``. A few flags named by the CLI contract (``--db``,
``--input-root`` ...) are simply the top-level keys.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import os
import typing
import zoneinfo
from dataclasses import dataclass, field
from typing import Any

import yaml

from models.preprocess import PreprocessConfig
from tracking.policy import TrackingPolicy
from transforms.records import FieldNames

ENVIRONMENTS = ("local", "dataflow")


class ConfigError(ValueError):
    """A configuration file or flag is invalid; the message names key and source."""


@dataclass(frozen=True)
class ValidationConfig:
    max_text_chars: int = 100_000
    max_payload_chars: int = 2_000


@dataclass(frozen=True)
class InferenceConfig:
    top_k: int = 3
    allow_sklearn_mismatch: bool = False
    timeout_seconds: float = 0.0  # a whole batch of batch_size records; 0 = no limit
    timeout_ms_per_record: float = 0.0  # n records get n times this; 0 = no limit
    fast_text_features: bool = True  # models.fastpath for word n-gram TF-IDF pipelines
    trusted_types: list[str] = field(default_factory=list)  # module.Class beyond sklearn
    allow_pickle: bool = False  # unpickle artifacts without the allow-list


@dataclass(frozen=True)
class ReadConfig:
    chunk_bytes: int = 64 * 1024 * 1024


@dataclass(frozen=True)
class SinkConfig:
    batch_rows: int = 5_000
    batch_bytes: int = 16 * 1024 * 1024
    max_rows_per_second: float = 0.0
    max_connections: int = 4
    statement_timeout_ms: int = 30_000
    max_retries: int = 8
    password_env: str = "PGPASSWORD"
    redis_url: str = ""  # job-wide rate limiter + connection slots; "" = per-machine
    lease_seconds: int = 120  # tranche lease of a run; renewed every quarter of it
    detached_lease_seconds: int = 43_200  # lease of a run whose launcher cannot wait (template)
    state_dir: str = ""  # the machine's limiter state; "" = <temp dir>/beamscore


@dataclass(frozen=True)
class TrackingConfig(TrackingPolicy):
    """The tracking policy's keys (thresholds, minimums, streak, cooldown) and these."""

    enabled: bool = True
    command: str = ""  # run when retraining is requested, e.g. a `beamscore train`
    labelled_sample: float = 1.0  # share of labelled records (by id hash) used for accuracy
    report_runs: int = 14  # runs shown in the report's history charts
    permutation_rows: int = 32  # rows per batch permuted for a model without coefficients


@dataclass(frozen=True)
class ScheduleConfig:
    timezone: str = "UTC"  # "yesterday" (no --date) is yesterday in this time zone


@dataclass(frozen=True)
class DataflowConfig:
    """Beam pipeline options for distributed runners, passed as ``--name=value`` flags
    (flags given on the command line win). Empty values are not passed."""

    project: str = ""
    region: str = ""
    temp_location: str = ""
    staging_location: str = ""
    service_account_email: str = ""
    machine_type: str = ""
    max_num_workers: int = 0
    sdk_container_image: str = ""
    setup_file: str = ""
    number_of_worker_harness_threads: int = 0
    experiments: list[str] = field(default_factory=list)

    def as_flags(self) -> list[str]:
        flags = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, list):
                flags += [f"--{f.name}={v}" for v in value]
            elif value:
                flags.append(f"--{f.name}={value}")
        return flags


@dataclass(frozen=True)
class Config:
    runner: str = "FnApiRunner"
    input_root: str = "var/landing"
    output_dir: str = "var/output"
    registry: str = "var/registry"
    db: str = "sqlite:///var/beamscore.db"
    model: str = "demo"
    workers: int = 1
    batch_size: int = 4096
    max_dead_letter_ratio: float = 0.05
    force: bool = False
    progress_seconds: float = 30.0
    local_engine: str = "fork"  # fork | spawn: how FnApiRunner starts local workers
    fields: FieldNames = field(default_factory=FieldNames)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    preprocessing: PreprocessConfig = field(default_factory=PreprocessConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    read: ReadConfig = field(default_factory=ReadConfig)
    sink: SinkConfig = field(default_factory=SinkConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    dataflow: DataflowConfig = field(default_factory=DataflowConfig)

    # Keys set by the overlay or a flag rather than base.yaml (not a config key).
    explicit_keys: tuple[str, ...] = field(default=(), metadata={"config": False})

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.pop("explicit_keys")
        return data


def _is_key(f: dataclasses.Field[Any]) -> bool:
    return f.metadata.get("config", True)


def _leaf_types(cls: type, prefix: str = "") -> dict[str, Any]:
    """Flattened ``section.key -> type`` for every leaf of a config dataclass."""
    hints = typing.get_type_hints(cls)
    out: dict[str, Any] = {}
    for f in filter(_is_key, dataclasses.fields(cls)):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            out.update(_leaf_types(tp, f"{prefix}{f.name}."))  # type: ignore[arg-type]
        else:
            out[f"{prefix}{f.name}"] = tp
    return out


LEAVES: dict[str, Any] = _leaf_types(Config)


def flag_for(key: str) -> str:
    return "--" + key.replace(".", "-").replace("_", "-")


def _coerce(key: str, value: Any, source: str, from_flag: bool = False) -> Any:
    """Check ``value`` against the schema type of ``key``; flag strings are parsed first."""
    tp = LEAVES[key]
    if from_flag and isinstance(value, str) and tp is not str:
        if tp == list[str]:
            value = [v.strip() for v in value.split(",") if v.strip()]
        elif tp is float:
            try:
                value = float(value)
            except ValueError:
                pass
        else:
            value = yaml.safe_load(value)
    ok: bool
    if tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok:
            value = float(value)
    elif tp is str:
        ok = isinstance(value, str)
    elif tp == list[str]:
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
    else:  # pragma: no cover - schema only uses the types above
        raise AssertionError(f"unsupported schema type for {key}: {tp}")
    if not ok:
        name = getattr(tp, "__name__", str(tp))
        raise ConfigError(
            f"{source}: key '{key}' must be of type {name}, got {value!r}"
        )
    return value


def _flatten(data: Any, source: str, prefix: str = "") -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at '{prefix or '<top>'}'")
    out: dict[str, Any] = {}
    for k, v in data.items():
        key = f"{prefix}{k}"
        if key in LEAVES:
            out[key] = _coerce(key, v, source)
        elif isinstance(v, dict) and any(leaf.startswith(key + ".") for leaf in LEAVES):
            out.update(_flatten(v, source, key + "."))
        else:
            raise ConfigError(f"{source}: unknown key '{key}'")
    return out


def _read_yaml(name_or_path: str) -> tuple[dict[str, Any], str]:
    """A bundled config by name (``local``) or a YAML file by path."""
    if name_or_path in ENVIRONMENTS or name_or_path == "base":
        res = importlib.resources.files("configs").joinpath(f"{name_or_path}.yaml")
        text, source = res.read_text(encoding="utf-8"), f"configs/{name_or_path}.yaml"
    else:
        if not os.path.exists(name_or_path):
            raise ConfigError(f"config file not found: {name_or_path}")
        with open(name_or_path, encoding="utf-8") as fh:
            text, source = fh.read(), name_or_path
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from exc
    return data, source


def _build(cls: type, flat: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in filter(_is_key, dataclasses.fields(cls)):
        tp = hints[f.name]
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(tp):
            kwargs[f.name] = _build(tp, flat, key + ".")  # type: ignore[arg-type]
        elif key in flat:
            kwargs[f.name] = flat[key]
    return cls(**kwargs)


def load_config(config: str | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Merge base.yaml, the overlay (``local`` when None) and flag overrides.

    ``overrides`` maps dotted keys to values (strings are parsed as YAML scalars).
    """
    data, source = _read_yaml("base")
    flat: dict[str, Any] = _flatten(data, source)
    data, source = _read_yaml(config or "local")
    overlay = _flatten(data, source)
    for key, value in (overrides or {}).items():
        if key not in LEAVES:
            raise ConfigError(f"command line: unknown key '{key}'")
        overlay[key] = _coerce(key, value, f"command line ({flag_for(key)})", from_flag=True)
    cfg: Config = _build(Config, flat | overlay)
    cfg = dataclasses.replace(cfg, explicit_keys=tuple(sorted(overlay)))
    _check_ranges(cfg)
    return cfg


def _check_ranges(cfg: Config) -> None:
    checks = [
        ("workers", cfg.workers >= 1),
        ("batch_size", cfg.batch_size >= 1),
        ("inference.top_k", cfg.inference.top_k >= 1),
        ("inference.timeout_seconds", cfg.inference.timeout_seconds >= 0),
        ("inference.timeout_ms_per_record", cfg.inference.timeout_ms_per_record >= 0),
        ("max_dead_letter_ratio", 0.0 <= cfg.max_dead_letter_ratio <= 1.0),
        ("sink.max_connections", cfg.sink.max_connections >= 1),
        ("sink.batch_rows", cfg.sink.batch_rows >= 1),
        ("sink.max_rows_per_second", cfg.sink.max_rows_per_second >= 0),
        ("sink.lease_seconds", cfg.sink.lease_seconds >= 2),
        ("tracking.labelled_sample", 0.0 <= cfg.tracking.labelled_sample <= 1.0),
        ("tracking.consecutive", cfg.tracking.consecutive >= 1),
        ("tracking.permutation_rows", cfg.tracking.permutation_rows >= 2),
        ("validation.max_text_chars", cfg.validation.max_text_chars >= 1),
        ("local_engine", cfg.local_engine in ("fork", "spawn")),
    ]
    for key, ok in checks:
        if not ok:
            raise ConfigError(f"key '{key}' is out of range")
    try:
        zoneinfo.ZoneInfo(cfg.schedule.timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(f"key 'schedule.timezone': unknown time zone "
                          f"{cfg.schedule.timezone!r}") from exc
    if cfg.inference.timeout_seconds and cfg.inference.timeout_ms_per_record:
        raise ConfigError("keys 'inference.timeout_seconds' and "
                          "'inference.timeout_ms_per_record' are alternatives: set one")
    if "password=" in cfg.db or _url_has_password(cfg.db):
        raise ConfigError(
            "key 'db' must not contain a password; set it in the environment variable "
            f"named by sink.password_env ({cfg.sink.password_env})"
        )


def _url_has_password(url: str) -> bool:
    from urllib.parse import urlsplit

    try:
        return urlsplit(url).password is not None
    except ValueError:
        return False
