"""Row ranges over row groups of any sizes: every row once, in order; a group cut into
``pieces`` equal pieces (8 at most, or one per 8 ranges), small groups kept whole and
put together, so a group of k pieces is decoded (k + 1) / 2 times over; without known
groups, even ranges as before."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from landing.splitters import MAX_PIECES_PER_GROUP, Extent, Limits, Span, pieces, row_ranges


def _bounds(groups: list[int]) -> list[int]:
    out = [0]
    for n in groups:
        out.append(out[-1] + n)
    return out


def _decoded(spans: list[Span], groups: list[int]) -> int:
    """Rows the reader decodes for ``spans``: each range from the first row of the first
    group it overlaps (format_parquet.read) to its own end."""
    bounds = _bounds(groups)
    return sum(b - max(g for g in bounds if g <= a) for a, b, _ in spans)


@given(groups=st.lists(st.integers(0, 400), min_size=1, max_size=12),
       step=st.integers(1, 500))
def test_row_ranges_follow_the_row_groups(groups: list[int], step: int) -> None:
    rows = sum(groups)
    spans = row_ranges(0, False, Extent(rows, tuple(groups)), Limits(1 << 20, step))
    if rows <= step:
        assert spans == [(0, -1, rows)]
        return
    assert spans[0][0] == 0 and spans[-1][1] == rows  # every row once, in order
    assert all(a < b and n == b - a for a, b, n in spans)
    assert all(s[1] == t[0] for s, t in zip(spans, spans[1:], strict=False))
    bounds = _bounds(groups)
    cuts = {a for a, _, _ in spans}
    decoded_at_most = 0.0
    for start, end, n in zip(bounds[:-1], bounds[1:], groups, strict=True):
        inside = sorted(c for c in cuts if start < c < end)
        k = len(inside) + 1
        decoded_at_most += n * (k + 1) / 2
        if inside:  # a group larger than a range, cut in equal pieces (within a row)
            sizes = [b - a for a, b in zip([start, *inside], [*inside, end], strict=True)]
            assert max(sizes) - min(sizes) <= 1
            assert n > step
            ranges = -(-n // step)
            assert k == pieces(ranges)
            assert k <= max(MAX_PIECES_PER_GROUP, -(-ranges // MAX_PIECES_PER_GROUP))
    for a, b, _ in spans:  # a range that is not a piece of one group holds whole groups
        if not any(s < a < e or s < b < e for s, e in zip(bounds[:-1], bounds[1:], strict=True)):
            whole = [n for s, e, n in zip(bounds[:-1], bounds[1:], groups, strict=True)
                     if a <= s and e <= b and n]
            assert len(whole) <= 1 or b - a <= step
    assert _decoded(spans, groups) <= decoded_at_most


@given(groups=st.lists(st.integers(1, 400), min_size=1, max_size=12),
       step=st.integers(1, 500))
def test_small_groups_are_put_together_up_to_a_range(groups: list[int], step: int) -> None:
    """No two neighbouring ranges of whole groups could have been one."""
    rows = sum(groups)
    spans = row_ranges(0, False, Extent(rows, tuple(groups)), Limits(1 << 20, step))
    bounds = set(_bounds(groups))
    whole = [(a, b) for a, b, _ in spans if a in bounds and b in bounds]
    pieces = {a for a, b, _ in spans if a not in bounds or b not in bounds}
    for (a, b), (c, d) in zip(whole, whole[1:], strict=False):
        if b == c and not pieces & {a, c}:
            assert d - a > step or max(g for g in groups) > step


def test_a_one_group_file_for_many_workers_gives_each_a_piece_not_eight() -> None:
    """1,000,000 rows in one group, planned for 40 cores (320 ranges of 3,125 rows): 40
    pieces; a 125,000-row group of a 1,000,000-row run at 16 or 40 cores: 8."""
    spans = row_ranges(0, False, Extent(1_000_000, (1_000_000,)), Limits(1 << 20, 3_125))
    assert [b - a for a, b, _ in spans] == [25_000] * 40
    assert _decoded(spans, [1_000_000]) == 20_500_000  # 20.5x its rows, not ~160x
    for step in (7_812, 3_125):
        spans = row_ranges(0, False, Extent(125_000, (125_000,)), Limits(1 << 20, step))
        assert len(spans) == 8


def test_pieces_of_a_group() -> None:
    assert [pieces(r) for r in (1, 2, 8, 9, 64, 65, 72, 73, 320)] == [
        1, 2, 8, 8, 8, 9, 9, 10, 40]


@given(rows=st.integers(0, 5000), step=st.integers(1, 500),
       groups=st.one_of(st.just(()), st.lists(st.integers(0, 50), max_size=4).map(tuple)))
def test_without_the_files_groups_ranges_are_even(rows: int, step: int,
                                                  groups: tuple[int, ...]) -> None:
    if sum(groups) == rows and groups:
        return  # groups known: the test above
    spans = row_ranges(0, False, Extent(rows, groups), Limits(1 << 20, step))
    if rows <= step:
        assert spans == [(0, -1, rows)]
    else:
        assert spans == [(a, min(a + step, rows), min(a + step, rows) - a)
                         for a in range(0, rows, step)]
