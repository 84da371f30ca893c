"""Table definitions: one source for DDL, row tuples, keys and which row of a key wins."""

from __future__ import annotations

import sqlite3

from hypothesis import given
from hypothesis import strategies as st

from store.backends.sqlite import SQLiteDialect
from store.schema import (
    DEAD_LETTERS,
    PREDICTIONS,
    TABLES,
    TRANCHES,
    Column,
    Table,
    one_row_per_key,
)

T = Table("t", (Column("a"), Column("b", "int"), Column("c", "json", nullable=True)),
          key=("a", "b"), indexes=(("c",),))
SQLITE = SQLiteDialect()
P = Table("p", (Column("k"), Column("run_id"), Column("f"), Column("pos", "int")),
          key=("k",), prefer=("f", "pos"))


def test_rows_follow_the_column_order_whatever_the_mapping_order() -> None:
    assert T.rows({"c": [None, "{}"], "b": [1, 2], "a": ["x", "y"]}) == [
        ("x", 1, None), ("y", 2, "{}")]
    assert T.row({"b": 3, "c": None, "a": "z", "extra": 1}) == ("z", 3, None)
    assert T.key_indices == (0, 1)


def test_one_row_per_key_keeps_the_last_row_or_the_preferred_one() -> None:
    rows = [("x", 1, "first"), ("y", 1, "only"), ("x", 1, "last"), ("x", 2, "other")]
    assert one_row_per_key(T, rows) == [("x", 1, "last"), ("y", 1, "only"), ("x", 2, "other")]
    unique = [("x", 1, None), ("x", 2, None)]
    assert one_row_per_key(T, unique) is unique
    dup = [("a", "r", "b.jsonl", 9), ("a", "r", "a.jsonl", 30), ("a", "r", "a.jsonl", 7)]
    assert one_row_per_key(P, dup) == [("a", "r", "a.jsonl", 7)]  # file order, then position


@given(st.lists(st.tuples(st.sampled_from("xyz"), st.integers(0, 3), st.integers(0, 99)),
                max_size=12))
def test_one_row_per_key_is_the_last_row_of_each_key_in_first_seen_order(
        rows: list[tuple[str, int, int]]) -> None:
    """Against a plain reference: for a table without ``prefer``, each key's last row,
    keys in the order first seen; rows whose keys are all distinct come back as they
    are (duplicates in one key column but not in the whole key included)."""
    reference: dict[tuple[str, int], tuple[str, int, int]] = {}
    for r in rows:
        reference[(r[0], r[1])] = r
    assert one_row_per_key(T, rows) == list(reference.values())


def test_the_preferred_row_wins_in_the_database_whatever_the_write_order() -> None:
    conn = sqlite3.connect(":memory:")
    for ddl in SQLITE.ddl(P):
        conn.execute(ddl)
    sql = SQLITE.upsert(P)
    for row in [("a", "r1", "b.jsonl", 1), ("a", "r1", "a.jsonl", 5), ("a", "r1", "a.jsonl", 9)]:
        conn.execute(sql, row)
    assert conn.execute("SELECT * FROM p").fetchall() == [("a", "r1", "a.jsonl", 5)]
    conn.execute(sql, ("a", "r2", "z.jsonl", 99))  # another run (a rerun) replaces it
    assert conn.execute("SELECT * FROM p").fetchall() == [("a", "r2", "z.jsonl", 99)]


def test_ddl_creates_the_table_its_key_and_indexes_in_sqlite() -> None:
    conn = sqlite3.connect(":memory:")
    for table in (*TABLES, T):
        for ddl in SQLITE.ddl(table):
            conn.execute(ddl)
            conn.execute(ddl)  # idempotent
    cols = [r[1] for r in conn.execute("PRAGMA table_info(predictions)")]
    assert tuple(cols) == PREDICTIONS.names
    pk = sorted((r[5], r[1]) for r in conn.execute("PRAGMA table_info(dead_letters)") if r[5])
    assert tuple(name for _, name in pk) == DEAD_LETTERS.key
    assert [r[1] for r in conn.execute("PRAGMA index_list(t)") if r[1] == "t_c"] == ["t_c"]
    nullable = {r[1] for r in conn.execute("PRAGMA table_info(tranches)") if not r[3]}
    assert nullable == {c.name for c in TRANCHES.columns if c.nullable}
    for table, where in (("predictions", "tranche = 'x' AND run_id = 'r'"),
                         ("dead_letters", "run_id = 'r'"), ("dead_letters", "tranche = 'x'")):
        plan = " ".join(str(r) for r in conn.execute(
            f"EXPLAIN QUERY PLAN SELECT count(*) FROM {table} WHERE {where}"))
        assert "USING" in plan and "INDEX" in plan, (table, where, plan)
