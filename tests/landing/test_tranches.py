"""Finding tranches and their files in the landing area."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from landing.tranches import InputRootMissing, date_range, plan_tranches
from tests.data import day_folder

DAY1, DAY2, DAY3 = dt.date(2026, 1, 1), dt.date(2026, 1, 2), dt.date(2026, 1, 3)



def test_plan_tranches_finds_all_formats_and_ignores_other_files(tmp_path: Path) -> None:
    folder = day_folder(tmp_path, DAY1)
    names = {"a.jsonl": "jsonl", "b.jsonl.gz": "jsonl.gz", "c.parquet": "parquet",
             "d.csv": "csv", "e.csv.gz": "csv.gz", "f.ndjson": "jsonl", "g.ndjson.gz": "jsonl.gz",
             "H.JSONL": "jsonl", "i.Parquet": "parquet", "j.CSV.GZ": "csv.gz"}
    for name in names:
        (folder / name).write_bytes(b"x" * 10)
    for other in ("README.txt", "_SUCCESS", "f.json", "k.xml", "l.jsonl.bz2"):
        (folder / other).write_bytes(b"y")
    [plan] = plan_tranches(str(tmp_path), [DAY1])
    assert not plan.missing
    assert {os.path.basename(f.path): f.format for f in plan.files} == names
    assert sorted(os.path.basename(p) for p in plan.ignored) == [
        "README.txt", "_SUCCESS", "f.json", "k.xml", "l.jsonl.bz2"]
    assert plan.total_bytes == 100


def test_an_input_root_that_does_not_exist_is_reported_as_such(tmp_path: Path) -> None:
    with pytest.raises(InputRootMissing, match="input root .*nowhere does not exist"):
        plan_tranches(str(tmp_path / "nowhere"), [DAY1, DAY2])


def test_plan_tranches_reports_missing_folder_and_folder_without_inputs(tmp_path: Path) -> None:
    day_folder(tmp_path, DAY1)
    (day_folder(tmp_path, DAY1) / "a.jsonl").write_bytes(b"{}\n")
    (day_folder(tmp_path, DAY3) / "notes.txt").write_bytes(b"nothing to read")
    plans = {p.tranche: p for p in plan_tranches(str(tmp_path), [DAY1, DAY2, DAY3])}
    assert list(plans) == ["2026-01-01", "2026-01-02", "2026-01-03"]
    assert not plans["2026-01-01"].missing
    for day in ("2026-01-02", "2026-01-03"):
        assert plans[day].missing
        assert plans[day].files == []
        assert f"dt={day}" in plans[day].missing_reason



def test_fingerprint_changes_with_a_file_and_not_with_listing_order(tmp_path: Path) -> None:
    folder = day_folder(tmp_path, DAY1)
    (folder / "a.jsonl").write_bytes(b"{}\n")
    (folder / "b.jsonl").write_bytes(b"{}\n")
    [before] = plan_tranches(str(tmp_path), [DAY1])
    reordered = before.fingerprint()
    before.files.reverse()
    assert before.fingerprint() == reordered
    (folder / "b.jsonl").write_bytes(b"{}\n{}\n")
    [after] = plan_tranches(str(tmp_path), [DAY1])
    assert after.fingerprint() != reordered


def test_date_range_is_inclusive_and_refuses_a_reversed_range() -> None:
    assert date_range(DAY1, DAY3) == [DAY1, DAY2, DAY3]
    assert date_range(DAY2, DAY2) == [DAY2]
    with pytest.raises(ValueError, match="before"):
        date_range(DAY3, DAY1)


def test_a_file_whose_name_is_not_utf8_is_refused_and_named_with_its_bytes_escaped(
        tmp_path: Path) -> None:
    """No row, file or line can name it as it is: an input file is refused (one dead
    letter, never opened), any other entry listed as never scored; both shown with the
    undecodable bytes escaped, and the tranche's fingerprint still made."""
    folder = day_folder(tmp_path, DAY1)
    (folder / "good.jsonl").write_bytes(b'{"id": "a", "text": "t"}\n')
    for name in (b"caf\xe9.jsonl", b"note-\xff.txt"):
        with open(os.path.join(os.fsencode(folder), name), "wb") as fh:
            fh.write(b'{"id": "b", "text": "t"}\n')
    os.mkdir(os.path.join(os.fsencode(folder), b"sub\xe9"))
    [plan] = plan_tranches(str(tmp_path), [DAY1])
    assert [os.path.basename(f.path) for f in plan.files] == ["good.jsonl"]
    assert [(os.path.basename(r.path), r.why.split(" (")[0]) for r in plan.refused] == [
        ("caf\\xe9.jsonl", "a file name that is not valid UTF-8")]
    assert sorted(os.path.basename(p.rstrip("/")) for p in plan.ignored) == [
        "note-\\xff.txt", "sub\\xe9"]
    assert len(plan.fingerprint()) == 64


def test_links_in_a_loop_or_to_nothing_are_listed_and_the_tranches_still_planned(
        tmp_path: Path) -> None:
    """A link that leads round in a loop (in a tranche, under the root, or the tranche
    folder itself) or to nothing inside the root holds no record: it is listed as never
    read, with why, and every other tranche is planned as usual."""
    from landing.tranches import unscored_entries

    folder = day_folder(tmp_path, DAY1)
    (folder / "ok.jsonl").write_bytes(b'{"id": "a", "text": "t"}\n')
    os.symlink("loop.jsonl", folder / "loop.jsonl")
    os.symlink("gone.jsonl", folder / "dangling.jsonl")
    os.symlink("loopy", tmp_path / "loopy")
    os.symlink("dt=2026-01-02", tmp_path / "dt=2026-01-02")  # the tranche folder itself
    plan1, plan2 = plan_tranches(str(tmp_path), [DAY1, DAY2])
    assert [os.path.basename(f.path) for f in plan1.files] == ["ok.jsonl"]
    assert sorted((os.path.basename(u.path), u.why) for u in plan1.unscored) == [
        ("dangling.jsonl", "cannot be looked at (No such file or directory): not read"),
        ("loop.jsonl", "cannot be looked at (Too many levels of symbolic links): not read")]
    assert plan2.missing and "cannot be listed (Too many levels of symbolic links)" in \
        plan2.missing_reason
    assert {os.path.basename(u.path): u.why for u in unscored_entries(str(tmp_path))} == {
        "loopy": "cannot be looked at (Too many levels of symbolic links): never read",
        "dt=2026-01-02": "cannot be looked at (Too many levels of symbolic links): never read"}


@pytest.mark.parametrize("name", ["x\\y.csv", "a\\.jsonl", "\\"])
def test_a_file_name_holding_a_backslash_is_read(tmp_path: Path, name: str) -> None:
    """Names are taken as they are, not matched against a pattern (Beam's ``*`` matches
    no backslash, which would leave such a file out of the plan without a word)."""
    folder = day_folder(tmp_path, DAY1)
    (folder / name).write_bytes(b"id,text\nb,t\n")
    [plan] = plan_tranches(str(tmp_path), [DAY1])
    found = [os.path.basename(f.path) for f in plan.files] + [
        os.path.basename(u.path) for u in plan.unscored]
    assert found == [name]
    assert bool(plan.files) == name.endswith((".csv", ".jsonl"))


_NAME_CHARS = "abcXYZ019 _-.,;'!@#$%^&()[]{}*?~+=\\é→"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(_NAME_CHARS, min_size=1, max_size=12)
                .filter(lambda n: n not in (".", "..")), min_size=1, max_size=6, unique=True))
def test_every_file_of_a_tranche_is_planned_whatever_its_name(tmp_path_factory: Any,
                                                            stems: list[str]) -> None:
    """Property against a listing of the folder by its own names (``os.listdir``): every
    input file is planned once, every other file listed as never scored, none missed,
    whatever characters the name holds (pattern characters, a backslash, accents)."""
    root = tmp_path_factory.mktemp("names")
    folder = day_folder(root, DAY1)
    for i, stem in enumerate(stems):
        suffix = (".jsonl", ".csv", ".txt")[i % 3]
        (folder / f"{stem}{suffix}").write_bytes(b'{"id": "a", "text": "t"}\n')
    [plan] = plan_tranches(str(root), [DAY1])
    names = sorted(os.listdir(folder))
    assert sorted(os.path.basename(f.path) for f in plan.files) == [
        n for n in names if n.endswith((".jsonl", ".csv"))]
    assert sorted(os.path.basename(u.path) for u in plan.unscored) == [
        n for n in names if n.endswith(".txt")]
    assert not plan.refused and not plan.missing
