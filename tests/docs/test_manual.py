"""The README and the manual in docs/: the README stays short and names the two commands,
every page is in the navigation, every relative link resolves, and the exit codes are
listed once, all of them."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from markdown.extensions.toc import slugify

from pipelines.orchestration import exit_codes

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
README = REPO / "README.md"
PAGES = sorted(DOCS.glob("*.md"))
LINK = re.compile(r"\]\(([^)\s]+)\)")


def prose(path: Path) -> str:
    """The file without its fenced code blocks (a link or heading there is not one)."""
    return re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"), flags=re.S | re.M)


def anchors(path: Path) -> set[str]:
    headings = re.findall(r"^#{1,6}\s+(.*?)\s*$", prose(path), re.M)
    return {slugify(re.sub(r"[`*]", "", h), "-") for h in headings}


def nav_files(node: object) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [f for value in node.values() for f in nav_files(value)]
    if isinstance(node, list):
        return [f for item in node for f in nav_files(item)]
    return []


def test_readme_is_short_and_names_the_two_commands() -> None:
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 200
    assert "make run" in text and "make test" in text


def test_every_page_is_in_the_navigation_once() -> None:
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text(encoding="utf-8"))
    listed = nav_files(config["nav"])
    assert sorted(listed) == sorted(p.name for p in PAGES)
    assert config["site_dir"] == "site" and config["strict"] is True


def test_every_relative_link_resolves() -> None:
    broken = []
    for doc in [README, REPO / "bench" / "README.md", *PAGES]:
        for target in LINK.findall(prose(doc)):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, fragment = target.partition("#")
            dest = (doc.parent / path).resolve() if path else doc
            if not dest.exists():
                broken.append(f"{doc.relative_to(REPO)}: {target}")
            elif fragment and dest.suffix == ".md" and fragment not in anchors(dest):
                broken.append(f"{doc.relative_to(REPO)}: {target} (no such heading)")
    assert not broken, broken


def exit_code_rows(path: Path) -> list[str]:
    """Rows of a table whose first cell is exit codes only (``| 130, 143 | ...``)."""
    return re.findall(r"^\|\s*(\d+(?:,\s*\d+)*)\s*\|", prose(path), re.M)


def test_the_exit_codes_are_listed_once_and_completely() -> None:
    tables = {p.name: rows for p in [README, *PAGES] if (rows := exit_code_rows(p))}
    assert list(tables) == ["scheduling.md"], tables
    listed = {int(code) for row in tables["scheduling.md"] for code in row.split(",")}
    defined = {value for name, value in vars(exit_codes).items() if name.startswith("EXIT_")}
    assert defined | {130, 143} == listed
