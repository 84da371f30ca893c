"""Layered, typed configuration: ``configs/base.yaml`` + an overlay + CLI flags.

The schema is the dataclass tree below (the ``sink`` section is the store's own
``store.settings.SinkConfig``); each key is declared once, with its type, default and
field metadata (help, Flex Template parameter or not: ``pipelines.configuration.schema``),
and the flags, docs/configuration.md and deploy/flex-template/metadata.json are derived
from it. YAML files and flags are checked against it, so an unknown or ill-typed key
fails with a message naming the key and the file it came from. Every leaf key gets a
CLI flag: ``sink.max_rows_per_second`` is ``--sink-max-rows-per-second``. A few flags
named by the CLI contract (``--db``, ``--input-root`` ...) are simply the top-level keys.
configs/base.yaml holds only what every environment shares beyond the defaults.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.resources
import math
import os
import re
import typing
import zoneinfo
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import yaml

from landing.chunks import MIN_CHUNK_BYTES
from landing.reading import DEFAULT_MAX_TEXT_CHARS
from models.preprocess import PreprocessConfig
from pipelines.configuration.schema import TYPE_NAMES, Key, Section, is_key, keys, sections
from store.database import backend_of, carries_password, port_problem, redact_text
from store.limits import redis_url_problem
from store.session import DatabaseSettings
from store.settings import SinkConfig, sink_values
from tracking.policy import TrackingPolicy
from transforms.records import FieldNames

ENVIRONMENTS = ("local", "dataflow")
T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration file or flag is invalid; the message names key and source."""


_GCS = "^gs://[a-z0-9][a-z0-9._-]{1,220}[a-z0-9](/[^ ,]*)?$"
_DATAFLOW_PATH = "On Dataflow: a gs:// path that the launcher and every worker can {}."


@dataclass(frozen=True)
class ValidationConfig:
    max_text_chars: int = field(default=DEFAULT_MAX_TEXT_CHARS, metadata={
        "help": "dead-letter texts longer than this", "min": 1,
        "label": "Maximum text length (characters)"})
    max_payload_chars: int = field(default=2_000, metadata={
        "help": "raw payload kept in a dead letter", "min": 0, "template": False})


@dataclass(frozen=True)
class InferenceConfig:
    top_k: int = field(default=3, metadata={
        "help": "labels kept in each prediction's top_k list", "min": 1,
        "label": "Labels kept per prediction (top k)"})
    allow_sklearn_mismatch: bool = field(default=False, metadata={
        "help": "load a model pickled by another scikit-learn version", "template": False})
    timeout_seconds: float = field(default=0.0, metadata={
        "help": "time limit of scoring a full batch of batch_size records, shared out per "
                "record (0 = none)", "min": 0, "label": "Time limit per full batch (seconds)"})
    timeout_ms_per_record: float = field(default=0.0, metadata={
        "help": "time limit per record: n records get n times it (0 = none)", "min": 0,
        "label": "Time limit per record (milliseconds)"})
    fast_text_features: bool = field(default=True, metadata={
        "help": "vectorised featurisation for word n-gram TF-IDF models", "template": False})
    trusted_types: list[str] = field(default_factory=list, metadata={
        "help": "module.Class names a model artifact may use beyond scikit-learn, numpy and "
                "scipy", "label": "Trusted model classes (comma-separated module.Class)",
        "regex": "^[A-Za-z_][A-Za-z0-9_]*([.][A-Za-z_][A-Za-z0-9_]*)+"
                 "(,[A-Za-z_][A-Za-z0-9_]*([.][A-Za-z_][A-Za-z0-9_]*)+)*$"})
    allow_pickle: bool = field(default=False, metadata={
        "help": "unpickle model artifacts without the allow-list (unsafe)", "template": False})


@dataclass(frozen=True)
class ReadConfig:
    chunk_bytes: int = field(default=64 * 1024 * 1024, metadata={
        "help": "largest byte range of an uncompressed JSONL file one worker reads",
        "min": MIN_CHUNK_BYTES, "template": False})


@dataclass(frozen=True)
class TrackingConfig(TrackingPolicy):
    """The tracking policy's keys (thresholds, minimums, streak, cooldown) and these."""

    enabled: bool = field(default=True, metadata={
        "help": "profile every tranche against the model's reference and store the metrics"})
    command: str = field(default="", metadata={
        "help": "command run when retraining is requested (shell)"})
    labelled_sample: float = field(default=1.0, metadata={
        "help": "share of labelled records, by id hash, used for accuracy", "min": 0, "max": 1})
    report_runs: int = field(default=14, metadata={
        "help": "runs in the report's history charts", "min": 1})
    permutation_rows: int = field(default=32, metadata={
        "help": "rows of each batch permuted for the importance of a model without "
                "coefficients", "min": 2})


@dataclass(frozen=True)
class ScheduleConfig:
    timezone: str = field(default="UTC", metadata={
        "help": "time zone whose yesterday a run without --date scores (IANA name)",
        "nonempty": True,
        "label": "Time zone of a run without date (IANA)",
        "regex": "^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+){0,2}$"})


@dataclass(frozen=True)
class DataflowConfig:
    """Beam pipeline options for distributed runners, passed as ``--name=value`` flags
    (flags given on the command line win). Empty values are not passed."""

    project: str = field(default="", metadata={
        "help": "Google Cloud project (Beam --project)"})
    region: str = field(default="", metadata={"help": "Dataflow region (Beam --region)"})
    temp_location: str = field(default="", metadata={
        "help": "gs:// path for temporary files (Beam --temp_location)"})
    staging_location: str = field(default="", metadata={
        "help": "gs:// path for staged packages (Beam --staging_location)"})
    service_account_email: str = field(default="", metadata={
        "help": "the workers' service account"})
    machine_type: str = field(default="", metadata={
        "help": "worker machine type, e.g. n2-standard-4"})
    max_num_workers: int = field(default=0, metadata={
        "help": "most worker VMs (also shares out the rate limit)", "min": 0})
    sdk_container_image: str = field(default="", metadata={
        "help": "the workers' container image (this repository's Dockerfile)"})
    setup_file: str = field(default="", metadata={
        "help": "setup.py to install on the workers instead of an image"})
    number_of_worker_harness_threads: int = field(default=0, metadata={
        "help": "threads per worker VM (0 = Beam's default)", "min": 0})
    experiments: list[str] = field(default_factory=list, metadata={
        "help": "Dataflow experiments, comma-separated"})

    @property
    def cores_per_worker(self) -> int:
        """The vCPUs of ``machine_type`` (``n2-standard-4``: 4, ``n2-custom-8-32768``:
        8): Dataflow runs one Python SDK process per vCPU. Without a type that says
        (empty, ``e2-medium``): ``number_of_worker_harness_threads``, else 1."""
        found = re.search(r"-custom-(\d+)-\d+(-ext)?$|-(\d+)$", self.machine_type)
        if found:
            return int(found.group(1) or found.group(3))
        return max(1, self.number_of_worker_harness_threads)

    def as_flags(self, given: frozenset[str] = frozenset()) -> list[str]:
        """The section as Beam's flags, but for the options named in ``given`` (set on
        the command line, which wins: a list such as ``experiments`` is then the
        command line's alone, not added to)."""
        flags = []
        for f in dataclasses.fields(self):
            if f.name in given:
                continue
            value = getattr(self, f.name)
            if isinstance(value, list):
                flags += [f"--{f.name}={v}" for v in value]
            elif value:
                flags.append(f"--{f.name}={value}")
        return flags


def _section(cls: type, help: str, template: bool = True) -> Any:
    meta: dict[str, Any] = {"help": help} if template else {"help": help, "template": False}
    return field(default_factory=cls, metadata=meta)


@dataclass(frozen=True)
class Config:
    runner: str = field(default="FnApiRunner", metadata={
        "help": "Beam runner: a name (FnApiRunner, DataflowRunner, PortableRunner ...) or a "
                "class path", "nonempty": True, "template": False})
    input_root: str = field(default="var/landing", metadata={
        "help": "root of the dt=YYYY-MM-DD tranche folders, local or gs://", "nonempty": True,
        "label": "Input root (gs://)", "regex": _GCS, "note": _DATAFLOW_PATH.format("read")})
    output_dir: str = field(default="var/output", metadata={
        "help": "where Parquet predictions, JSONL dead letters and run summaries go",
        "nonempty": True,
        "label": "Output directory (gs://)", "regex": _GCS,
        "note": _DATAFLOW_PATH.format("write")})
    registry: str = field(default="var/registry", metadata={
        "help": "model registry root, local or gs://", "nonempty": True,
        "label": "Model registry root (gs://)",
        "regex": _GCS, "note": _DATAFLOW_PATH.format("read")})
    db: str = field(default="sqlite:///var/beamscore.db", metadata={
        "help": "sqlite:///relative/path, sqlite:////absolute/path or "
                "postgresql://user@host:port/db (never a password)", "nonempty": True,
        "label": "PostgreSQL URL (no password)",
        "regex": "^postgresql://[A-Za-z0-9._~%-]+@[A-Za-z0-9.-]+(:[0-9]{1,5})?"
                 "/[A-Za-z0-9_.-]+$",
        "note": "On Dataflow: postgresql://user@host:port/db only; the password comes from "
                "the environment variable named by sink_password_env."})
    model: str = field(default="", metadata={
        "help": "NAME (its production alias, else the newest), NAME:VERSION or NAME:ALIAS; "
                "required by score and plan (no default)",
        "label": "Model",
        "regex": "^[A-Za-z0-9][A-Za-z0-9._-]*(:[A-Za-z0-9][A-Za-z0-9._-]*)?$"})
    workers: int = field(default=1, metadata={
        "help": "local worker processes", "min": 1, "template": False})
    batch_size: int = field(default=4096, metadata={
        "help": "documents per batch through read, validation, inference and write", "min": 1,
        "label": "Batch size (documents)"})
    max_dead_letter_ratio: float = field(default=0.05, metadata={
        "help": "exit 4, and leave a tranche failed, above this share of dead letters",
        "label": "Maximum dead-letter ratio", "min": 0, "max": 1,
        "note": "Between 0 and 1."})
    allow_empty_tranches: bool = field(default=False, metadata={
        "help": "a tranche whose files hold no record completes (exit 0) instead of being "
                "reported empty (exit 3)",
        "label": "Allow empty tranches", "note": "true or false."})
    force: bool = field(default=False, metadata={
        "help": "rescore tranches the ledger has completed",
        "label": "Rescore completed tranches", "note": "true or false."})
    progress_seconds: float = field(default=30.0, metadata={
        "help": "log job-wide progress (and each worker's) at least this often (seconds)",
        "min": 0, "template": False})
    wave_records: int = field(default=2_000_000, metadata={
        "help": "records per wave of whole tranches, one pipeline each, its tranches "
                "completed when it ends (0: the run is one wave)",
        "min": 0, "template": False})
    local_engine: str = field(default="fork", metadata={
        "help": "workers > 1 on FnApiRunner: fork (from a pre-imported server) or spawn "
                "(Beam's multi_processing)", "choices": ("fork", "spawn"), "template": False})
    fields: FieldNames = _section(FieldNames, "the input's field names")
    validation: ValidationConfig = _section(
        ValidationConfig, "records dead-lettered before inference")
    preprocessing: PreprocessConfig = _section(
        PreprocessConfig, "training's text preprocessing (scoring applies the model's own)",
        template=False)
    inference: InferenceConfig = _section(
        InferenceConfig, "predictions: top k, time limits, which model artifacts load")
    read: ReadConfig = _section(ReadConfig, "reading the input files")
    sink: SinkConfig = _section(
        SinkConfig, "database writes: batching, rate limit, connections, retries, leases")
    tracking: TrackingConfig = _section(
        TrackingConfig, "drift, accuracy and importance per tranche; retraining requests",
        template=False)
    schedule: ScheduleConfig = _section(ScheduleConfig, "the day a run without --date scores")
    dataflow: DataflowConfig = _section(
        DataflowConfig, "Beam options for distributed runners (empty values are not "
        "passed; flags on the command line win)", template=False)

    # Keys set by the overlay or a flag rather than base.yaml (not a config key).
    explicit_keys: tuple[str, ...] = field(default=(), metadata={"config": False})

    @property
    def parallelism(self) -> int:
        """How many chunks a run can read and score at once, which its plan cuts for
        (``landing.chunks``): on Dataflow with ``dataflow.max_num_workers`` set, the
        worker VMs times the processes each runs (``DataflowConfig.cores_per_worker``);
        otherwise the local worker processes (``workers``)."""
        if self.runner.endswith("DataflowRunner") and self.dataflow.max_num_workers > 0:
            return self.dataflow.max_num_workers * self.dataflow.cores_per_worker
        return self.workers

    @property
    def database(self) -> DatabaseSettings:
        """The configured database: the ``db`` URL with every key of the ``sink`` section."""
        return DatabaseSettings(self.db, **sink_values(self.sink))

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.pop("explicit_keys")
        return data


def settings_of(cls: type[T], cfg: Config) -> T:
    """The settings dataclass ``cls`` (what one step reads of the config), each of its
    fields the config's key, section or property of the same name: the one place such
    settings are unpacked from the whole config."""
    return cls(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(cast(Any, cls))})


KEYS: list[Key] = keys(Config)
SECTIONS: list[Section] = sections(Config)
LEAVES: dict[str, Any] = {k.name: k.type for k in KEYS}
_FLAGS: dict[str, str] = {k.name: k.flag for k in KEYS}


# A bool flag's words (YAML's, which config files use too); any other is refused.
_FLAG_BOOLS = {"true": True, "false": False, "yes": True, "no": False, "on": True,
               "off": False}


def _unknown(key: str, source: str) -> ConfigError:
    """An unknown key, with the known one it most likely meant."""
    near = difflib.get_close_matches(key, LEAVES, n=1, cutoff=0.75)
    return ConfigError(f"{source}: unknown key '{key}'"
                       + (f" (did you mean '{near[0]}'?)" if near else ""))


def _coerce(key: str, value: Any, source: str, from_flag: bool = False) -> Any:
    """Check ``value`` against the schema type of ``key``; flag strings are parsed first."""
    tp = LEAVES[key]
    if tp is float and isinstance(value, str):
        # flags and files alike: YAML 1.1 reads 5e-2 (no dot) as a string
        try:
            value = float(value)
        except ValueError:
            pass
    elif from_flag and isinstance(value, str) and tp is not str:
        if tp == list[str]:
            value = [v.strip() for v in value.split(",") if v.strip()]
        elif tp is int:  # decimal: YAML 1.1 would read "010" as 8 and "1:30" as 90
            value = int(value) if re.fullmatch(r"\s*[+-]?[0-9]+\s*", value) else value
        elif tp is bool:
            value = _FLAG_BOOLS.get(value.strip().lower(), value)
        else:
            value = yaml.safe_load(value)
    ok: bool
    if tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is float:  # a finite number: NaN would pass and fail every comparison
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) \
            and math.isfinite(value)
        if ok:
            value = float(value)
    elif tp is str:
        ok = isinstance(value, str)
    elif tp == list[str]:
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
    else:  # pragma: no cover - schema only uses the types above
        raise AssertionError(f"unsupported schema type for {key}: {tp}")
    if not ok:
        name = "finite float" if tp is float else TYPE_NAMES.get(tp, str(tp))
        raise ConfigError(  # a URL in the value shown without its password
            f"{source}: key '{key}' must be of type {name}, got {redact_text(repr(value))}"
        )
    return value


def _flatten(data: Any, source: str, prefix: str = "",
             lines: dict[str, int] | None = None) -> dict[str, Any]:
    """A file's mapping as dotted keys and checked values; ``lines``: the line each key
    is on, named in its errors."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at '{prefix or '<top>'}'")
    out: dict[str, Any] = {}
    for k, v in data.items():
        key = f"{prefix}{k}"
        where = _at(source, key, lines)
        if "." in str(k):  # a key is written nested: sink: {batch_rows: ...}
            section, _, leaf = key.rpartition(".")
            raise ConfigError(f"{where}: key '{k}' is written with a dot; nest it in its "
                              f"section ('{section}:' then '  {leaf}: ...')")
        if key in LEAVES:
            out[key] = _coerce(key, v, where)
        elif any(leaf.startswith(key + ".") for leaf in LEAVES):
            if v is None:  # a section whose keys are all commented out: nothing set
                continue
            if not isinstance(v, dict):
                raise ConfigError(f"{where}: section '{key}' must be a mapping of its keys, "
                                  f"got {redact_text(repr(v))}")
            out.update(_flatten(v, source, key + ".", lines))
        else:
            raise _unknown(key, where)
    return out


def _at(source: str, key: str, lines: dict[str, int] | None) -> str:
    """``source``, with the line of ``key`` in it when known."""
    return f"{source}, line {lines[key]}" if lines and key in lines else source


def _key_lines(text: str) -> dict[str, int]:
    """The line (1-based) of each dotted key of a YAML text, where it is written (a key a
    merge brings in is not: its mapping's line is unknown here)."""
    lines: dict[str, int] = {}

    def walk(node: Any, prefix: str) -> None:
        if not isinstance(node, yaml.MappingNode):
            return
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and \
                    key_node.tag != "tag:yaml.org,2002:merge":
                key = f"{prefix}{key_node.value}"
                if "." in str(key_node.value):  # refused: its error names its own line
                    lines[key] = key_node.start_mark.line + 1
                lines.setdefault(key, key_node.start_mark.line + 1)
                walk(value_node, key + ".")

    walk(yaml.compose(text, Loader=yaml.SafeLoader), "")
    return lines


def _read_yaml(name_or_path: str) -> tuple[dict[str, Any], str, dict[str, int]]:
    """A bundled config by name (``local``) or a YAML file by path: its mapping, how it
    is named, and the line of each of its keys."""
    if name_or_path in ENVIRONMENTS or name_or_path == "base":
        res = importlib.resources.files("configs").joinpath(f"{name_or_path}.yaml")
        text, source = res.read_text(encoding="utf-8"), f"configs/{name_or_path}.yaml"
    else:
        if not os.path.exists(name_or_path):
            raise ConfigError(f"config file not found: {name_or_path}")
        try:
            with open(name_or_path, encoding="utf-8") as fh:
                text, source = fh.read(), name_or_path
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {name_or_path} cannot be read: "
                              f"{type(exc).__name__}: {exc}") from exc
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML {_where(exc, text)}") from None
    if data is None:  # empty, or comments only: sets nothing
        data = {}
    elif not isinstance(data, dict):  # [], 0, false, "": not a config's keys
        raise ConfigError(f"{source}: expected a mapping of config keys, got "
                          f"{type(data).__name__}")
    return data, source, _key_lines(text) if data else {}


def _where(exc: yaml.YAMLError, text: str) -> str:
    """Where a file is not valid YAML and why, in one line and without quoting the file
    (PyYAML's own message shows its lines, and a line may hold a secret)."""
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        problem = " ".join(str(exc.problem or exc.context or "").split())
        if mark is not None:
            return f"at line {mark.line + 1}, column {mark.column + 1}: {problem}"
        return f": {problem}"
    if isinstance(exc, yaml.reader.ReaderError):  # a character YAML does not allow
        line = text.count("\n", 0, exc.position)
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1)
        return (f"at line {line + 1}, column {column + 1}: {exc.reason} "
                f"(#x{exc.character:04x})")
    return f": {type(exc).__name__}"


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (YAML itself would
    keep the last one silently); a merge key (``<<: *anchor``) brings in the anchor's
    keys, which the mapping's own keys override, as YAML merges them."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False
                          ) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                key: Any = "<<"
            else:
                key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} given twice", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def _build(cls: type[T], flat: dict[str, Any], prefix: str = "") -> T:
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in filter(is_key, dataclasses.fields(cast(Any, cls))):
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
    origins: dict[str, str] = {}  # where each key set was set: named in its errors
    flat: dict[str, Any] = {}
    overlay: dict[str, Any] = {}
    for layer, name in ((flat, "base"), (overlay, config or "local")):
        data, source, lines = _read_yaml(name)
        layer.update(_flatten(data, source, lines=lines))
        origins.update({key: _at(source, key, lines) for key in layer})
    for key, value in (overrides or {}).items():
        if key not in LEAVES:
            raise _unknown(key, "command line")
        origins[key] = f"command line ({_FLAGS[key]})"
        overlay[key] = _coerce(key, value, origins[key], from_flag=True)
    cfg = _build(Config, flat | overlay)
    cfg = dataclasses.replace(cfg, explicit_keys=tuple(sorted(overlay)))
    _check_ranges(cfg, origins)
    return cfg


def _value(cfg: Config, key: str) -> Any:
    value: Any = cfg
    for part in key.split("."):
        value = getattr(value, part)
    return value


def _check_ranges(cfg: Config, origins: dict[str, str] | None = None) -> None:
    """Every key's value against the range its schema declares (``Key.problem``), then
    what no single key's range says; an error names where the key was set (``origins``:
    file and line, or flag)."""
    def at(*keys: str) -> str:
        """Where ``keys`` were set, as an error's prefix."""
        found = [w for k in keys if (w := (origins or {}).get(k))]
        return f"{' and '.join(dict.fromkeys(found))}: " if found else ""

    for key in KEYS:
        problem = key.problem(_value(cfg, key.name))
        if problem:
            raise ConfigError(f"{at(key.name)}key '{key.name}' {problem}")
    try:
        zoneinfo.ZoneInfo(cfg.schedule.timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(f"{at('schedule.timezone')}key 'schedule.timezone': unknown time "
                          f"zone {cfg.schedule.timezone!r}") from exc
    if cfg.inference.timeout_seconds and cfg.inference.timeout_ms_per_record:
        raise ConfigError(f"{at('inference.timeout_seconds', 'inference.timeout_ms_per_record')}"
                          "keys 'inference.timeout_seconds' and "
                          "'inference.timeout_ms_per_record' are alternatives: set one")
    try:
        password = carries_password(cfg.db)
    except ValueError as exc:  # e.g. an unclosed "[" of an IPv6 host; never the URL
        raise ConfigError(f"{at('db')}key 'db' is not a valid URL: {exc}") from None
    if password:
        raise ConfigError(
            f"{at('db')}key 'db' must not contain a password; set it in the environment variable "
            f"named by sink.password_env ({cfg.sink.password_env})"
        )
    if problem := port_problem(cfg.db):  # a client would quote it in its errors
        raise ConfigError(f"{at('db')}key 'db' {problem}")
    try:
        backend_of(cfg.db)
    except ValueError as exc:  # names the scheme, never the URL
        raise ConfigError(f"{at('db')}key 'db': {exc}") from None
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", cfg.sink.password_env):
        # not quoted: a password put there by mistake would be shown
        raise ConfigError(f"{at('sink.password_env')}key 'sink.password_env' must be the "
                          "name of an environment variable (letters, digits and _, not a "
                          "digit first)")
    if cfg.sink.redis_url and (problem := redis_url_problem(cfg.sink.redis_url)):
        raise ConfigError(f"{at('sink.redis_url')}key 'sink.redis_url' {problem}")
