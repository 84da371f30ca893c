"""The database password never leaves the environment: not in logs, summaries, run
rows, output files, Parquet metadata or the template spec."""

from __future__ import annotations

import io
import logging
import shutil
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import psycopg
import pytest

from landing.samples import make_docs, write_tranche
from pipelines.cli import main
from tests.pipelines.helpers import run_cli

SECRET = "s3cr3t-Zq9-do-not-leak"
REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.postgres


def test_the_password_is_found_nowhere(registry_root: str, tmp_path: Path, pg_url: str,
                                       monkeypatch: pytest.MonkeyPatch,
                                       caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("BEAMSCORE_DB_PASSWORD", SECRET)
    monkeypatch.setenv("PGPASSWORD", SECRET)
    caplog.set_level(logging.DEBUG)
    root = tmp_path / "landing"
    write_tranche(str(root), "2026-08-01", list(make_docs(50, seed=5)), "jsonl",
                  inject_bad=True)
    out = tmp_path / "out"
    common = ["--db", pg_url, "--sink-password-env", "BEAMSCORE_DB_PASSWORD"]
    scored = run_cli("-v", "score", "--date", "2026-08-01", "--input-root", str(root),
                     "--registry", registry_root, "--output-dir", str(out), *common,
                     "--max-dead-letter-ratio", "0.5")
    assert scored.rc == 0, scored.err
    [(run_id,)] = psycopg.connect(pg_url).execute("SELECT run_id FROM runs").fetchall()
    shown = run_cli("runs", "show", run_id, *common)
    listed = run_cli("runs", "list", *common)
    texts = {"stdout": scored.out + shown.out + listed.out,
             "stderr": scored.err + shown.err + listed.err,
             "logs": "\n".join(r.getMessage() for r in caplog.records)}
    with psycopg.connect(pg_url) as conn:
        for table in ("runs", "tranches", "predictions", "dead_letters", "monitoring",
                      "retrain_triggers"):
            texts[table] = repr(conn.execute(f"SELECT * FROM {table}").fetchall())
    for path in out.rglob("*"):  # summaries, dead-letter JSONL, Parquet (data + metadata)
        if path.is_file():
            texts[str(path)] = path.read_bytes().decode("latin-1")
    for spec in (REPO / "deploy").rglob("*.json"):
        texts[str(spec)] = spec.read_text()
    if shutil.which("gcloud"):  # the template spec gcloud builds, with the password set
        from tests.deploy.test_flex_template import METADATA, gcloud_build

        built = gcloud_build(METADATA, tmp_path)
        assert built.returncode == 0, built.stderr
        texts["template spec"] = built.stdout + built.stderr
    assert texts["logs"] and any(k.endswith(".parquet") for k in texts)
    leaks = [where for where, text in texts.items() if SECRET in text]
    assert leaks == []


def _usage_error(*argv: str) -> tuple[int, str]:
    """(exit status, stderr) of a command line argparse refuses."""
    err = io.StringIO()
    with redirect_stderr(err), redirect_stdout(io.StringIO()), \
            pytest.raises(SystemExit) as exc:
        main(list(argv))
    return int(exc.value.code or 0), err.getvalue()


@pytest.mark.parametrize("args", [
    ["score", "--model", "m", "--sink-max=postgresql://u:hunter2@h/d"],  # was ambiguous
    ["score", "--model", "m", "--date=postgresql://u:hunter2@h/d"],      # not a date
    ["plan", "--model", "m", "--from=postgresql://u:hunter2@h/d", "--to", "2026-01-01"],
    ["runs", "list", "--limit=postgresql://u:hunter2@h/d"],              # not a number
])
def test_a_usage_error_never_shows_a_password(args: list[str]) -> None:
    """Whatever argparse quotes back in its error (an argument it could not match or
    convert), a URL's password is redacted, in every command's parser."""
    code, err = _usage_error(*args)
    assert code == 2 and "error:" in err
    assert "hunter2" not in err and "u:***@h" in err, err


@pytest.mark.parametrize("abbreviated", ["--batch", "--sink-re", "--inference-top"])
def test_an_abbreviated_option_is_not_taken_for_the_one_it_prefixes(abbreviated: str) -> None:
    """Options are taken by their exact names (a script's typo is an error, and a Beam
    option is never read as the beamscore option it prefixes)."""
    code, err = _usage_error("score", "--model", "m", abbreviated, "1")
    assert code == 2 and "unrecognized arguments" in err and abbreviated in err, err
