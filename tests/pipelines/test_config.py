"""Layered configuration: base.yaml + overlay + command-line overrides, checked keys."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from pipelines.configuration.config import ConfigError, load_config
from tests.data import bundled_config, flat_keys


def _write(tmp_path: Path, text: str, name: str = "overlay.yaml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("overlay", ["local", "dataflow"])
def test_bundled_overlay_is_merged_over_base(overlay: str) -> None:
    cfg = load_config(None if overlay == "local" else overlay)
    expected = flat_keys(bundled_config("base")) | flat_keys(bundled_config(overlay))
    actual = flat_keys(cfg.to_dict())
    for key, value in expected.items():
        assert actual[key] == value, key


def test_dataflow_overlay_changes_only_what_it_sets() -> None:
    base, local, dataflow = load_config("base"), load_config(), load_config("dataflow")
    assert local.runner == "FnApiRunner"
    assert dataflow.runner == "DataflowRunner"
    assert dataflow.db.startswith("postgresql://")
    assert dataflow.sink.max_rows_per_second > 0
    # Keys the overlay does not mention keep the base value.
    assert dataflow.validation == base.validation
    assert dataflow.sink.max_retries == base.sink.max_retries
    assert dataflow.preprocessing == base.preprocessing


def test_custom_overlay_file_overrides_base_and_keeps_the_rest(tmp_path: Path) -> None:
    path = _write(tmp_path, "workers: 3\nsink:\n  max_connections: 2\n"
                            "fields:\n  metadata: [channel, lang]\n")
    cfg = load_config(path)
    base = load_config("base")
    assert cfg.workers == 3
    assert cfg.sink.max_connections == 2
    assert cfg.fields.metadata == ["channel", "lang"]
    assert cfg.sink.batch_rows == base.sink.batch_rows
    assert cfg.runner == base.runner
    assert cfg.inference == base.inference


@pytest.mark.parametrize("text, key", [
    # unknown keys
    ("wokers: 2\n", "wokers"),
    ("sink:\n  max_rows_per_sec: 10\n", "sink.max_rows_per_sec"),
    # ill-typed values
    ('workers: "two"\n', "workers"),
    ("force: maybe\n", "force"),
    ("inference:\n  top_k: [1, 2]\n", "inference.top_k"),
    ("fields:\n  metadata: channel\n", "fields.metadata"),
])
def test_unknown_key_or_ill_typed_value_in_file_names_key_and_file(
        tmp_path: Path, text: str, key: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert f"'{key}'" in str(exc.value)
    assert path in str(exc.value)


def test_missing_config_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(str(tmp_path / "nope.yaml"))


def test_string_overrides_are_parsed_to_the_schema_types() -> None:
    cfg = load_config("dataflow", {
        "workers": "8", "force": "true", "inference.allow_sklearn_mismatch": "true",
        "max_dead_letter_ratio": "0.25", "sink.max_connections": "2", "model": "other:3",
    })
    assert cfg.workers == 8
    assert cfg.force is True
    assert cfg.inference.allow_sklearn_mismatch is True
    assert cfg.max_dead_letter_ratio == 0.25
    assert cfg.sink.max_connections == 2  # beats the overlay's 8
    assert cfg.model == "other:3"
    assert cfg.runner == "DataflowRunner"  # untouched keys still come from the overlay


def test_list_override_is_split_on_commas() -> None:
    cfg = load_config(None, {"fields.metadata": "channel, lang"})
    assert cfg.fields.metadata == ["channel", "lang"]


def test_float_override_accepts_scientific_notation() -> None:
    cfg = load_config(None, {"max_dead_letter_ratio": "1e-4"})
    assert cfg.max_dead_letter_ratio == pytest.approx(0.0001)


@pytest.mark.parametrize("key, value", [("workers", "two"), ("force", "perhaps"),
                                        ("batch_size", "1.5")])
def test_ill_typed_override_names_key_and_flag(key: str, value: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(None, {key: value})
    message = str(exc.value)
    assert f"'{key}'" in message
    assert "--" + key.replace("_", "-") in message


def test_unknown_override_key_is_rejected() -> None:
    with pytest.raises(ConfigError, match="'no_such_key'"):
        load_config(None, {"no_such_key": "1"})


@pytest.mark.parametrize("key, value", [("workers", "0"), ("max_dead_letter_ratio", "1.5"),
                                        ("inference.top_k", "0"),
                                        ("tracking.significance", "0"),
                                        ("tracking.significance", "1")])
def test_out_of_range_values_are_rejected(key: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"'{key}'"):
        load_config(None, {key: value})


@pytest.mark.parametrize("url", [
    "postgresql://scorer:s3cr3t-pw@db.example:5432/scores",
    "postgresql://scorer@db.example/scores?password=s3cr3t-pw",
    "postgresql://scorer@db.example/scores?pass%77ord=s3cr3t-pw",  # libpq decodes the name
    "postgresql://scorer@db.example/scores?sslmode=require&PASSWORD=s3cr3t-pw",
    "host=db.example dbname=scores password = s3cr3t-pw",
    "postgresql://scorer:s3cr3t-pw/scores",  # "@host" left out: read as host:port
])
def test_db_url_with_password_is_rejected_without_echoing_it(url: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(None, {"db": url})
    assert "'db'" in str(exc.value)
    assert "s3cr3t-pw" not in str(exc.value)


def test_db_url_with_password_in_a_file_is_rejected(tmp_path: Path) -> None:
    path = _write(tmp_path, "db: postgresql://scorer:s3cr3t-pw@db.example:5432/scores\n")
    with pytest.raises(ConfigError, match="password"):
        load_config(path)


@pytest.mark.parametrize("url", ["redis://:s3cr3t-pw@localhost:6379/0",
                                 "redis://default:s3cr3t-pw/0", "redis://localhost:s3cr3t-pw/0"])
def test_a_redis_url_with_a_password_is_rejected_without_echoing_it(url: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(None, {"sink.redis_url": url})
    assert "'sink.redis_url'" in str(exc.value) and "s3cr3t-pw" not in str(exc.value)
    assert load_config(None, {"sink.redis_url": "redis://localhost:6379/0"}).sink.redis_url


@pytest.mark.parametrize("text", [
    "db: [postgresql://scorer:s3cr3t-pw@db.example:5432/scores]\n",
    "sink: {redis_url: {a: 'redis://:s3cr3t-pw@localhost:6379/0'}}\n",
    "sink: postgresql://scorer:s3cr3t-pw@db.example/scores\n",
])
def test_a_value_of_the_wrong_type_is_shown_without_its_password(tmp_path: Path,
                                                                 text: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(_write(tmp_path, text))
    assert "must be" in str(exc.value) and "s3cr3t-pw" not in str(exc.value)
    assert "***" in str(exc.value)


@pytest.mark.parametrize("value, expected", [("010", 10), ("+7", 7), (" 12 ", 12)])
def test_an_integer_flag_is_read_as_a_decimal_number(value: str, expected: int) -> None:
    """Not as YAML 1.1 reads it: "010" is not 8 (octal), "1:30" not 90 (base 60)."""
    assert load_config(None, {"batch_size": value}).batch_size == expected


@pytest.mark.parametrize("value", ["1:30", "0x10", "0b11", "1_0", "1e3", "ten"])
def test_an_integer_flag_in_another_notation_is_refused(value: str) -> None:
    with pytest.raises(ConfigError, match="'sink.batch_rows' must be of type int"):
        load_config(None, {"sink.batch_rows": value})


@pytest.mark.parametrize("value, expected", [("true", True), ("False", False), ("on", True),
                                             ("off", False), ("yes", True), ("NO", False)])
def test_a_bool_flag_reads_true_false_and_yaml_words(value: str, expected: bool) -> None:
    assert load_config(None, {"tracking.enabled": value}).tracking.enabled is expected


@pytest.mark.parametrize("value", ["1", "y", "maybe", "[]"])
def test_a_bool_flag_of_another_word_is_refused(value: str) -> None:
    with pytest.raises(ConfigError, match="'tracking.enabled' must be of type bool"):
        load_config(None, {"tracking.enabled": value})


def test_an_unknown_key_names_the_key_it_most_likely_meant(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'batch_sise' \(did you mean "
                                          r"'batch_size'\?\)"):
        load_config(_write(tmp_path, "batch_sise: 10\n"))
    with pytest.raises(ConfigError, match=r"unknown key 'sink.batch_row' \(did you mean "
                                          r"'sink.batch_rows'\?\)"):
        load_config(None, {"sink.batch_row": "10"})
    with pytest.raises(ConfigError) as exc:
        load_config(_write(tmp_path, "colour: blue\n"))
    assert "did you mean" not in str(exc.value)


@pytest.mark.parametrize("flag, text", [
    ("nan", "tracking:\n  accuracy_drop: .nan\n"), ("inf", "tracking:\n  psi: .inf\n"),
    ("-inf", "max_dead_letter_ratio: -.inf\n")])
def test_a_number_that_is_not_finite_is_rejected(tmp_path: Path, flag: str, text: str
                                                ) -> None:
    """NaN would pass every range check and make every threshold comparison false: an
    alert switched off without a word."""
    with pytest.raises(ConfigError, match="'tracking.accuracy_drop' must be of type finite"):
        load_config(None, {"tracking.accuracy_drop": flag})
    with pytest.raises(ConfigError, match="finite float"):
        load_config(_write(tmp_path, text))


def test_a_section_must_be_a_mapping_and_an_empty_one_sets_nothing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="section 'tracking' must be a mapping"):
        load_config(_write(tmp_path, "tracking: 5\n"))
    commented = load_config(_write(tmp_path, "tracking:\n  # psi: 0.5\nworkers: 3\n"))
    assert commented.workers == 3 and commented.tracking == load_config(None).tracking


def test_a_key_given_twice_is_rejected_naming_it_and_its_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "workers: 2\nsink:\n  batch_rows: 10\n  batch_rows: 20\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert "'batch_rows' given twice" in str(exc.value) and "line 4" in str(exc.value)
    assert path in str(exc.value)


def test_a_config_path_that_cannot_be_read_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"config file {tmp_path} cannot be read"):
        load_config(str(tmp_path))
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(b"workers: 2 # caf\xe9\n")
    with pytest.raises(ConfigError, match=f"config file {bad} cannot be read: Unicode"):
        load_config(str(bad))


@pytest.mark.parametrize("url", [
    "postgresql://scorer@db.example:5432/scores",
    "postgresql://db.example:5432/scores?application_name=nightly@host-1",
])
def test_db_url_without_password_is_accepted(url: str) -> None:
    assert load_config(None, {"db": url}).db == url


@pytest.mark.parametrize("machine_type, threads, cores", [
    ("n2-standard-4", 0, 4), ("n2-standard-4", 12, 4), ("n2-highmem-16", 0, 16),
    ("n2-custom-8-32768", 0, 8), ("n2-custom-6-16384-ext", 0, 6), ("e2-medium", 0, 1),
    ("", 3, 3), ("", 0, 1)])
def test_a_dataflow_run_is_cut_for_every_process_of_its_workers(
        machine_type: str, threads: int, cores: int) -> None:
    """A plan cuts chunks for ``parallelism`` readers: on Dataflow, the worker VMs times
    the SDK processes each runs (one per vCPU of the machine type)."""
    from pipelines.configuration.config import settings_of
    from pipelines.orchestration.plan import PlanSettings

    cfg = load_config("dataflow", {"dataflow.max_num_workers": "10",
                                   "dataflow.machine_type": machine_type,
                                   "dataflow.number_of_worker_harness_threads": str(threads)})
    assert cfg.dataflow.cores_per_worker == cores
    assert settings_of(PlanSettings, cfg).parallelism == 10 * cores


def test_a_local_run_or_one_without_a_worker_bound_is_cut_for_its_workers() -> None:
    assert load_config(None, {"workers": "3"}).parallelism == 3
    assert load_config("dataflow", {"dataflow.max_num_workers": "0",
                                    "workers": "2"}).parallelism == 2
    assert load_config("dataflow").parallelism == 10 * 4  # the overlay: 10 n2-standard-4


@pytest.mark.parametrize("key, value, allowed", [
    ("read.chunk_bytes", "-5", ">= 262144"),  # a negative step: records lost
    ("read.chunk_bytes", "0", ">= 262144"),
    ("read.chunk_bytes", "1", ">= 262144"),   # 327,987 chunks for a 320 MB file
    ("sink.max_retries", "-5", ">= 0"),
    ("sink.statement_timeout_ms", "-1", ">= 1"),
    ("sink.batch_bytes", "0", ">= 1"),
    ("sink.detached_lease_seconds", "0", ">= 2"),
    ("validation.max_payload_chars", "-3", ">= 0"),
    ("progress_seconds", "-1", ">= 0"),
    ("tracking.report_runs", "-1", ">= 1"),
    ("tracking.min_records", "-4", ">= 1"),
    ("tracking.cooldown_hours", "-5", ">= 0"),
    ("tracking.psi", "-1", ">= 0"),
    ("tracking.significance", "1", "> 0 and < 1"),
    ("max_dead_letter_ratio", "1.5", ">= 0 and <= 1"),
    ("dataflow.max_num_workers", "-3", ">= 0"),
    ("sink.password_env", "", "non-empty"),
    ("fields.id", "", "non-empty"),
    ("fields.text", " ", "non-empty"),
    ("local_engine", "thread", "one of fork, spawn"),
])
def test_a_value_out_of_its_key_s_range_is_refused_naming_the_range(
        key: str, value: str, allowed: str) -> None:
    """Naming where the value was set: the flag."""
    with pytest.raises(ConfigError) as exc:
        load_config(None, {key: value})
    flag = "--" + key.replace(".", "-").replace("_", "-")
    assert str(exc.value).startswith(f"command line ({flag}): key '{key}' must be {allowed}, "
                                     "got "), str(exc.value)


def test_a_value_from_a_file_is_refused_naming_the_file_and_its_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "# batch settings\nworkers: 2\n\nbatch_size: 0\n"
                            "sink:\n  batch_rows: many\n")
    with pytest.raises(ConfigError, match=rf"^{path}, line 6: key 'sink.batch_rows' must be "
                                          "of type int"):
        load_config(path)
    path = _write(tmp_path, "# batch settings\nworkers: 2\n\nbatch_size: 0\n")
    with pytest.raises(ConfigError, match=rf"^{path}, line 4: key 'batch_size' must be >= 1"):
        load_config(path)
    path = _write(tmp_path, "workers: 2\n\nbatch_sise: 1\n")
    with pytest.raises(ConfigError, match=rf"^{path}, line 3: unknown key 'batch_sise'"):
        load_config(path)


def test_the_range_is_checked_for_files_and_a_list_s_items(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"key 'read.chunk_bytes' must be >= 262144, got 1$"):
        load_config(_write(tmp_path, "read:\n  chunk_bytes: 1\n"))
    with pytest.raises(ConfigError, match="key 'fields.metadata' must be a list of non-empty"):
        load_config(_write(tmp_path, "fields:\n  metadata: [lang, '']\n"))
    assert load_config(None, {"read.chunk_bytes": str(256 << 10)}).read.chunk_bytes == 256 << 10


@pytest.mark.parametrize("text", [
    "db: postgresql://u:s3cr3t-pw@h/db\ndb: postgresql://u:s3cr3t-pw@h/db\n",  # twice
    "workers: 2\ndb: 'postgresql://u:s3cr3t-pw@h/db\n",                        # unterminated
    "sink:\n  batch_rows: 2\n db: postgresql://u:s3cr3t-pw@h/db\n",             # indentation
    "db: postgresql://u:s3cr3t-pw@h/db\x07\n",                                  # a control char
])
def test_a_file_that_is_not_yaml_is_named_with_line_and_column_never_its_text(
        tmp_path: Path, text: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    message = str(exc.value)
    assert message.startswith(f"{path}: not valid YAML at line ")
    assert ", column " in message and "\n" not in message, message
    assert "s3cr3t-pw" not in message and "<unicode string>" not in message


def test_merge_keys_bring_in_an_anchor_s_keys_and_a_key_twice_is_still_refused(
        tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, "tracking: &t\n  psi: 0.3\n  ks: 0.2\n"
                                       "sink: {<<: {max_retries: 2, batch_rows: 7}, "
                                       "batch_rows: 10}\n"))
    assert (cfg.sink.max_retries, cfg.sink.batch_rows) == (2, 10)
    assert (cfg.tracking.psi, cfg.tracking.ks) == (0.3, 0.2)
    with pytest.raises(ConfigError, match="key 'batch_rows' given twice"):
        load_config(_write(tmp_path, "sink: {<<: {max_retries: 2}, batch_rows: 7, "
                                     "batch_rows: 8}\n"))


def test_a_float_in_exponent_form_is_a_float_in_a_file_too(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, "max_dead_letter_ratio: 5e-2\ntracking:\n"
                                       "  psi: 1E-1\n"))
    assert cfg.max_dead_letter_ratio == pytest.approx(0.05)
    assert cfg.tracking.psi == pytest.approx(0.1)
    with pytest.raises(ConfigError, match="'max_dead_letter_ratio' must be of type finite"):
        load_config(_write(tmp_path, "max_dead_letter_ratio: five\n"))


@pytest.mark.parametrize("url, scheme", [("mysql://u:hunter2@127.0.0.1/test", None),
                                         ("postgresql+psycopg://u:hunter2@127.0.0.1/t", None),
                                         ("mysql://u@127.0.0.1/test?x=hunter2", "mysql")])
def test_a_db_of_another_scheme_is_refused_without_echoing_it(url: str,
                                                              scheme: str | None) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(None, {"db": url})
    assert "'db'" in str(exc.value) and "hunter2" not in str(exc.value)
    if scheme:
        assert f"scheme '{scheme}'" in str(exc.value)


def test_a_password_with_an_unencoded_slash_is_a_password() -> None:
    """libpq ends the host part at the "/": it would read host "beamscore", port
    "pa", and every log line would show the rest."""
    with pytest.raises(ConfigError, match="key 'db' must not contain a password") as exc:
        load_config(None, {"db": "postgresql://beamscore:pa/ss@127.0.0.1:5432/db"})
    assert "pa/ss" not in str(exc.value)


@pytest.mark.parametrize("url, problem", [
    ("redis://127.0.0.1:6379/0?password=s3cr3t-pw", "must not contain a password"),
    ("redis://127.0.0.1:6379/0?pass%77ord=s3cr3t-pw", "must not contain a password"),
    ("redis://default:s3cr3t-pw@127.0.0.1:6379/0", "must not contain a password"),
    ("redis://:s3cr/3t-pw@127.0.0.1:6379/0", "must not contain a password"),
    ("redis://127.0.0.1:abc/0", "is not a Redis URL"),
    ("http://127.0.0.1:6379/0", "is not a Redis URL"),
])
def test_a_redis_url_redis_py_would_read_a_password_from_or_cannot_read_is_refused(
        url: str, problem: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(None, {"sink.redis_url": url})
    assert str(exc.value).startswith(
        f"command line (--sink-redis-url): key 'sink.redis_url' {problem}"), str(exc.value)
    assert "s3cr" not in str(exc.value)


def test_a_list_of_other_than_strings_says_which_list_it_must_be(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'inference.trusted_types' must be of type "
                                          r"list of str, got \[1\]"):
        load_config(_write(tmp_path, "inference:\n  trusted_types: [1]\n"))


def test_a_db_url_that_does_not_parse_names_the_key_not_the_url() -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(None, {"db": "postgresql://u@[::1/sec-ret"})
    assert str(exc.value) == ("command line (--db): key 'db' is not a valid URL: Invalid "
                              "IPv6 URL")


def test_a_dotted_key_in_a_file_is_refused_naming_its_line(tmp_path: Path) -> None:
    """Keys are nested in their sections: a dotted one (which could be given twice,
    once dotted and once nested, the later silently winning) is refused."""
    path = _write(tmp_path, "sink:\n  batch_rows: 5\nsink.batch_rows: 3\n")
    with pytest.raises(ConfigError, match=rf"^{path}, line 3: key 'sink.batch_rows' is "
                                          "written with a dot; nest it in its section"):
        load_config(path)


@pytest.mark.parametrize("text", ["[]\n", "0\n", "false\n", "''\n", "- workers: 2\n"])
def test_a_file_that_is_not_a_mapping_is_refused(tmp_path: Path, text: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError, match=rf"^{path}: expected a mapping"):
        load_config(path)


def test_an_empty_file_or_one_of_comments_sets_nothing(tmp_path: Path) -> None:
    for text in ("", "# nothing yet\n"):
        assert dataclasses.replace(load_config(_write(tmp_path, text)), explicit_keys=()) \
            == dataclasses.replace(load_config(None), explicit_keys=())


@pytest.mark.parametrize("text, flags, where, key", [
    ("schedule:\n  timezone: Europe/Berln\n", {}, "line 2", "key 'schedule.timezone'"),
    ("db: mysql://h/d\n", {}, "line 1", "key 'db'"),
    ("inference:\n  timeout_seconds: 5\n", {"inference.timeout_ms_per_record": "2"},
     "line 2 and command line (--inference-timeout-ms-per-record)",
     "keys 'inference.timeout_seconds' and"),
    ("sink:\n  password_env: NOT A NAME\n", {}, "line 2", "key 'sink.password_env'"),
])
def test_a_rule_across_keys_names_where_they_were_set(
        tmp_path: Path, text: str, flags: dict[str, str], where: str, key: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as exc:
        load_config(path, flags)
    assert str(exc.value).startswith(f"{path}, {where}: {key}"), str(exc.value)


def test_a_password_env_that_is_no_variable_name_is_refused_unquoted() -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(None, {"sink.password_env": "s3cret pass"})
    assert "must be the name of an environment variable" in str(exc.value)
    assert "s3cret" not in str(exc.value)
