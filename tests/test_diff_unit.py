"""The differ on hand-built snapshots: pure, no database (the end-to-end rule cases, each
made by real DDL, are in test_rehearse.py). One case per way a change is recognised."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dbos_migrate.rehearse.catalog import Column, Constraint, Enum, Function, Index, Snapshot, Table, View
from dbos_migrate.rehearse.diff import diff, widened
from dbos_migrate.rehearse.rules import RULES


def col(name: str, attnum: int, type_: str = "integer", notnull: bool = False, default: str | None = None) -> Column:
    return Column(name, attnum, type_, notnull, default, "", "")


def table(oid: int, name: str, *cols: Column, node: int | None = None) -> Table:
    return Table(oid, "public", name, "r", node or oid, {c.name: c for c in cols})


ORDERS = table(100, "orders", col("id", 1, notnull=True), col("amount", 2, "numeric(10,2)"), col("note", 3, "text"))


def snap(*tables: Table, **extra: dict[int, object]) -> Snapshot:
    s = Snapshot(tables={t.oid: t for t in tables})
    for key, objects in extra.items():
        getattr(s, key).update(objects)
    return s


def rules(before: Snapshot, after: Snapshot) -> list[tuple[str, str]]:
    return [(c.rule, c.object) for c in diff(before, after)]


def test_no_change_is_no_finding() -> None:
    assert diff(snap(ORDERS), snap(ORDERS)) == []


def test_dropped_and_added_tables() -> None:
    other = table(200, "audit", col("at", 1, "timestamptz"))
    assert rules(snap(ORDERS), snap(other)) == [("BRK001", "public.orders"), ("SAFE001", "public.audit")]


def test_a_rename_keeps_the_oid() -> None:
    renamed = replace(ORDERS, name="purchases")
    assert ("BRK003", "public.orders") in rules(snap(ORDERS), snap(renamed))


def test_drop_and_create_with_the_same_columns_looks_like_a_rename() -> None:
    twin = replace(ORDERS, oid=300, name="purchases", relfilenode=300)
    assert rules(snap(ORDERS), snap(twin)) == [("BRK003", "public.orders")]


def test_recreated_under_the_same_name_is_a_rewrite() -> None:
    again = replace(ORDERS, oid=301, relfilenode=301)
    assert ("LCK002", "public.orders") in rules(snap(ORDERS), snap(again))


def test_column_rename_by_attnum_and_by_drop_plus_add() -> None:
    by_attnum = table(100, "orders", col("id", 1, notnull=True), col("total", 2, "numeric(10,2)"), col("note", 3, "text"))
    assert rules(snap(ORDERS), snap(by_attnum)) == [("BRK004", "public.orders.amount")]
    drop_add = table(100, "orders", col("id", 1, notnull=True), col("note", 3, "text"), col("total", 4, "numeric(10,2)"))
    assert rules(snap(ORDERS), snap(drop_add)) == [("BRK004", "public.orders.amount")]


@pytest.mark.parametrize(
    ("after", "rule"),
    [
        (col("extra", 4, notnull=True), "BRK007"),
        (col("extra", 4, notnull=True, default="0"), "SAFE002"),
        (col("extra", 4), "SAFE002"),
    ],
)
def test_added_columns(after: Column, rule: str) -> None:
    grown = replace(ORDERS, columns={**ORDERS.columns, after.name: after})
    assert rules(snap(ORDERS), snap(grown)) == [(rule, "public.orders.extra")]


@pytest.mark.parametrize(
    ("old", "new", "rule"),
    [
        ("numeric(10,2)", "numeric(12,2)", "SAFE004"),
        ("numeric(10,2)", "numeric(8,2)", "BRK005"),
        ("numeric(10,2)", "text", "BRK005"),
    ],
)
def test_type_changes(old: str, new: str, rule: str) -> None:
    before = table(1, "t", col("c", 1, old))
    after = table(1, "t", col("c", 1, new))
    assert rules(snap(before), snap(after)) == [(rule, "public.t.c")]


def test_not_null_and_defaults() -> None:
    before = table(1, "t", col("c", 1, default="0"), col("d", 2, notnull=True, default="1"))
    after = table(1, "t", col("c", 1, notnull=True, default="0"), col("d", 2, notnull=True))
    assert rules(snap(before), snap(after)) == [("BRK006", "public.t.c"), ("BRK012", "public.t.d")]


def test_constraints_and_indexes() -> None:
    unique = Constraint(10, 100, "orders_note_key", "u", "UNIQUE (note)", True, 11, ("note",))
    backing = Index(11, "public", "orders_note_key", 100, "CREATE UNIQUE INDEX ...", True, True, False, True, ("note",))
    plain = Index(12, "public", "orders_amount_idx", 100, "CREATE INDEX ... (amount)", False, True, False, False, ("amount",))
    concurrent = replace(plain, oid=13, name="orders_note_idx", concurrently=True, columns=("note",))
    before = snap(ORDERS, constraints={10: unique}, indexes={11: backing, 12: plain})
    after = snap(ORDERS, indexes={12: plain, 13: concurrent})
    assert rules(before, after) == [("BRK011", "public.orders.orders_note_key"), ("SAFE003", "public.orders_note_idx")]
    locked = snap(ORDERS, indexes={12: plain, 14: replace(plain, oid=14, name="orders_note_idx2")})
    assert ("LCK001", "public.orders_note_idx2") in rules(snap(ORDERS, indexes={12: plain}), locked)
    check = Constraint(15, 100, "positive", "c", "CHECK (amount > 0)", False, 0, ("amount",))
    assert rules(snap(ORDERS), snap(ORDERS, constraints={15: check})) == [("SAFE009", "public.orders.positive")]
    assert rules(snap(ORDERS), snap(ORDERS, constraints={15: replace(check, validated=True)})) == [
        ("LCK003", "public.orders.positive")
    ]


def test_enums_views_functions() -> None:
    mood = Enum(50, "public.mood", ("happy", "sad"))
    view = View(60, "public.totals", "v", "SELECT ...", ("id", "amount"))
    fn = Function(70, "public", "total", "integer", "numeric", "f", "abc")
    before = snap(enums={50: mood}, views={60: view}, functions={70: fn})
    after = snap(
        enums={50: replace(mood, labels=("happy", "ok"))},
        views={60: replace(view, columns=("id",))},
        functions={70: replace(fn, result="integer")},
    )
    assert rules(before, after) == [
        ("BRK008", "public.mood"), ("SAFE005", "public.mood"), ("BRK009", "public.totals"),
        ("BRK010", "public.total(integer)"),
    ]  # fmt: skip


def test_every_change_names_a_known_rule() -> None:
    after = snap(table(200, "audit", col("at", 1)))
    assert all(c.rule in RULES for c in diff(snap(ORDERS), after))


@given(st.integers(1, 500), st.integers(1, 500))
def test_varchar_widening_is_exactly_longer(old: int, new: int) -> None:
    assert widened(f"character varying({old})", f"character varying({new})") is (new >= old)
