"""setup.py lists every package of the product (its list is what the sdist, Dataflow's
--setup_file and the image install): a new subpackage cannot be left out."""

from __future__ import annotations

import ast
from pathlib import Path

from setuptools import find_packages

REPO = Path(__file__).resolve().parents[2]


def test_setup_lists_every_product_package() -> None:
    tree = ast.parse((REPO / "setup.py").read_text())
    listed = next(ast.literal_eval(k.value) for k in ast.walk(tree)
                  if isinstance(k, ast.keyword) and k.arg == "packages")
    found = find_packages(str(REPO), exclude=["tests", "tests.*", "bench", "bench.*",
                                              "deploy", "deploy.*", "docs", "site"])
    assert sorted(listed) == sorted(found)
