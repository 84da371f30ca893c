"""The command line's shape: one handler per command, short per-command help, a
top-level help that loads no heavy library, and docs/cli.md generated from the parser."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.cli import COMMANDS, build_parser, reference

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("apache_beam", "sklearn", "pandas", "pyarrow")


def _leaves(parser: argparse.ArgumentParser, path: str = "beamscore"
            ) -> list[tuple[str, argparse.ArgumentParser]]:
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return [(path, parser)]
    return [leaf for name, child in subs[0].choices.items()
            for leaf in _leaves(child, f"{path} {name}")]


def test_every_command_names_its_handler() -> None:
    leaves = _leaves(build_parser())
    assert {path.split()[1] for path, _ in leaves} == set(COMMANDS)
    assert len(leaves) == 12
    for path, parser in leaves:
        assert callable(parser.get_default("handler")), path


def test_top_level_help_imports_no_heavy_library() -> None:
    probe = ("import sys\nfrom pipelines.cli import main\n"
             "try:\n    main(['--help'])\nexcept SystemExit as exc:\n    code = exc.code\n"
             f"print('LOADED', code, [m for m in {HEAVY!r} if m in sys.modules])\n")
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "train" in done.stdout and "triggers" in done.stdout
    assert done.stdout.splitlines()[-1] == "LOADED 0 []"


@pytest.mark.parametrize("command, most", [
    (["runs", "show"], 40), (["runs", "list"], 40), (["runs", "release"], 40),
    (["triggers", "list"], 40), (["db", "init"], 30), (["models", "list"], 25),
    (["report"], 50)])
def test_a_database_or_registry_command_offers_only_its_own_flags(
        command: list[str], most: int, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser(lazy=True).parse_args([*command, "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert len(text.splitlines()) < most, text
    assert "--config" in text and "--workers" not in text and "--tracking-psi" not in text
    assert ("--db" in text) is (command[0] != "models")
    # a command that reads the database waits for one that is down, as docs/scheduling.md says
    assert ("--sink-connect-timeout-seconds" in text) is (command[0] != "models")


def test_score_and_plan_offer_every_config_flag(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("score", "plan"):
        with pytest.raises(SystemExit):
            build_parser(lazy=True).parse_args([command, "--help"])
        text = capsys.readouterr().out
        assert "--workers" in text and "--tracking-psi" in text and "--to DATE" in text


def test_docs_cli_md_is_the_parsers_reference() -> None:
    committed = (REPO / "docs" / "cli.md").read_text()
    assert committed == reference(), (
        "docs/cli.md differs from the parser; regenerate it: python -c 'from pipelines.cli "
        "import reference; print(reference(), end=\"\")' > docs/cli.md")
    for path, _ in _leaves(build_parser()):
        assert f"## {path}\n" in committed
