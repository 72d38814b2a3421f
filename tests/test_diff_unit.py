"""The differ and the data-check rules on hand-built snapshots: pure, no database (the
end-to-end rule cases, each made by real DDL, are in test_rehearse.py and
test_rehearse_data.py). One case per way a change is recognised, and every rule of
rehearse/rules.py asserted by at least one case (test_every_rule_has_a_unit_case)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dbos_migrate.engine.scrub import Scrubber
from dbos_migrate.rehearse import datachecks
from dbos_migrate.rehearse.catalog import Column, Constraint, Enum, Function, Index, Snapshot, Table, View
from dbos_migrate.rehearse.dataplan import Details, Planner, Rel, RowCheck, SizeCheck
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
    by_attnum = table(
        100, "orders", col("id", 1, notnull=True), col("total", 2, "numeric(10,2)"), col("note", 3, "text")
    )
    assert rules(snap(ORDERS), snap(by_attnum)) == [("BRK004", "public.orders.amount")]
    drop_add = table(
        100, "orders", col("id", 1, notnull=True), col("note", 3, "text"), col("total", 4, "numeric(10,2)")
    )
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
    plain = Index(
        12, "public", "orders_amount_idx", 100, "CREATE INDEX ... (amount)", False, True, False, False, ("amount",)
    )
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
        ("BRK008", "public.mood"),
        ("SAFE005", "public.mood"),
        ("BRK009", "public.totals"),
        ("BRK010", "public.total(integer)"),
    ]


def test_every_change_names_a_known_rule() -> None:
    after = snap(table(200, "audit", col("at", 1)))
    assert all(c.rule in RULES for c in diff(snap(ORDERS), after))


@given(st.integers(1, 500), st.integers(1, 500))
def test_varchar_widening_is_exactly_longer(old: int, new: int) -> None:
    assert widened(f"character varying({old})", f"character varying({new})") is (new >= old)


# ---------------------------------------------------------------------------- every rule has a unit case
# Rules the cases above did not reach; test_every_rule_has_a_unit_case keeps the list complete.


def test_a_dropped_column_is_breaking() -> None:
    slim = table(100, "orders", col("id", 1, notnull=True), col("amount", 2, "numeric(10,2)"))
    (dropped,) = diff(snap(ORDERS), snap(slim))
    assert (dropped.rule, dropped.object, dropped.severity) == ("BRK002", "public.orders.note", "breaking")
    bare = table(100, "orders", col("id", 1, notnull=True))  # two gone, nothing added: no rename to guess
    assert rules(snap(ORDERS), snap(bare)) == [("BRK002", "public.orders.amount"), ("BRK002", "public.orders.note")]


def test_added_type_view_and_function() -> None:
    mood = Enum(51, "public.mood", ("ok",))
    view = View(61, "public.big_orders", "v", "SELECT ...", ("id",))
    fn = Function(71, "public", "order_total", "integer", "numeric", "f", "h1")
    assert rules(snap(), snap(enums={51: mood}, views={61: view}, functions={71: fn})) == [
        ("SAFE006", "public.mood"),
        ("SAFE006", "public.big_orders"),
        ("SAFE006", "public.order_total(integer)"),
    ]


def test_changed_definitions() -> None:
    view = View(60, "public.totals", "v", "SELECT 1", ("id",))
    fn = Function(70, "public", "total", "integer", "numeric", "f", "abc")
    before = snap(views={60: view}, functions={70: fn})
    after = snap(views={60: replace(view, definition="SELECT 2")}, functions={70: replace(fn, body="def")})
    assert rules(before, after) == [("SAFE007", "public.totals"), ("SAFE007", "public.total(integer)")]
    check = Constraint(15, 100, "positive", "c", "CHECK (amount > 0)", True, 0, ("amount",))
    again = replace(ORDERS, oid=301, relfilenode=301)  # dropped and re-created: no old rows were locked
    redefined = replace(check, oid=16, table_oid=301, definition="CHECK (amount >= 0)")
    assert rules(snap(ORDERS, constraints={15: check}), snap(again, constraints={16: redefined})) == [
        ("LCK002", "public.orders"),
        ("SAFE007", "public.orders.positive"),
    ]


def test_relaxed_restrictions() -> None:
    strict = table(1, "t", col("c", 1, notnull=True))
    assert rules(snap(strict), snap(table(1, "t", col("c", 1)))) == [("SAFE008", "public.t.c")]
    check = Constraint(15, 100, "positive", "c", "CHECK (amount > 0)", True, 0, ("amount",))
    assert rules(snap(ORDERS, constraints={15: check}), snap(ORDERS)) == [("SAFE008", "public.orders.positive")]
    plain = Index(
        12, "public", "orders_amount_idx", 100, "CREATE INDEX ... (amount)", False, True, False, False, ("amount",)
    )
    assert rules(snap(ORDERS, indexes={12: plain}), snap(ORDERS)) == [("SAFE008", "public.orders_amount_idx")]
    trigger = Function(72, "public", "touch", "", "trigger", "f", "h")
    assert rules(snap(functions={72: trigger}), snap()) == [("SAFE008", "public.touch()")]


def test_defaults_added_or_changed() -> None:
    before = table(1, "t", col("c", 1), col("d", 2, default="0"))
    after = table(1, "t", col("c", 1, default="'x'::text"), col("d", 2, default="1"))
    assert rules(snap(before), snap(after)) == [("SAFE010", "public.t.c"), ("SAFE010", "public.t.d")]


def test_renamed_index_and_constraint() -> None:
    plain = Index(
        12, "public", "orders_amount_idx", 100, "CREATE INDEX ... (amount)", False, True, False, False, ("amount",)
    )
    check = Constraint(15, 100, "positive", "c", "CHECK (amount > 0)", True, 0, ("amount",))
    before = snap(ORDERS, indexes={12: plain}, constraints={15: check})
    after = snap(
        ORDERS,
        indexes={12: replace(plain, name="orders_by_amount")},
        constraints={15: replace(check, name="amount_positive")},
    )
    assert sorted(rules(before, after)) == [
        ("SAFE011", "public.orders.amount_positive"),
        ("SAFE011", "public.orders_by_amount"),
    ]


# ---------------------------------------------------------------------------- what each change says
# The cases above check which rule fires; these check everything a finding carries (its detail,
# the group the text output files it under, its table), as the report shows it.


def _scenarios() -> Iterator[tuple[str, Snapshot, Snapshot]]:
    """Before/after pairs, one or more per way the differ recognises a change."""
    other = table(200, "audit", col("at", 1, "timestamptz"))
    yield "tables dropped and added", snap(ORDERS), snap(other)
    yield "table renamed", snap(ORDERS), snap(replace(ORDERS, name="purchases"))
    yield "table recreated", snap(ORDERS), snap(replace(ORDERS, oid=301, relfilenode=301))
    yield (
        "column renamed",
        snap(ORDERS),
        snap(
            table(100, "orders", col("id", 1, notnull=True), col("total", 2, "numeric(10,2)"), col("note", 3, "text"))
        ),
    )
    yield "columns dropped", snap(ORDERS), snap(table(100, "orders", col("id", 1, notnull=True)))
    grown = replace(
        ORDERS,
        columns={
            **ORDERS.columns,
            "extra": col("extra", 4, notnull=True),
            "flag": col("flag", 5, "boolean", notnull=True, default="false"),
            "memo": col("memo", 6, "text"),
        },
    )
    yield "columns added", snap(ORDERS), snap(grown)
    before = table(
        1,
        "t",
        col("a", 1, "numeric(10,2)"),
        col("b", 2, "numeric(10,2)"),
        col("c", 3, "character varying(10)"),
        col("d", 4, default="0"),
        col("e", 5, notnull=True, default="1"),
        col("f", 6, notnull=True),
        col("g", 7),
    )
    after = table(
        1,
        "t",
        col("a", 1, "numeric(12,2)"),
        col("b", 2, "text"),
        col("c", 3, "character varying(20)"),
        col("d", 4, notnull=True, default="1"),
        col("e", 5, notnull=True),
        col("f", 6),
        col("g", 7, default="'x'::text"),
    )
    yield "columns changed", snap(before), snap(after)
    unique = Constraint(10, 100, "orders_note_key", "u", "UNIQUE (note)", True, 11, ("note",))
    backing = Index(11, "public", "orders_note_key", 100, "CREATE UNIQUE INDEX ...", True, True, False, True, ("note",))
    plain = Index(
        12, "public", "orders_amount_idx", 100, "CREATE INDEX ... (amount)", False, True, False, False, ("amount",)
    )
    concurrent = replace(
        plain,
        oid=13,
        name="orders_note_idx",
        definition="CREATE INDEX ... (note)",
        concurrently=True,
        columns=("note",),
    )
    yield (
        "unique dropped, index added concurrently",
        snap(ORDERS, constraints={10: unique}, indexes={11: backing, 12: plain}),
        snap(ORDERS, indexes={12: plain, 13: concurrent}),
    )
    yield (
        "index added with a lock",
        snap(ORDERS, indexes={12: plain}),
        snap(ORDERS, indexes={12: plain, 14: replace(plain, oid=14, name="orders_note_idx2")}),
    )
    check = Constraint(15, 100, "positive", "c", "CHECK (amount > 0)", False, 0, ("amount",))
    yield "check added not valid", snap(ORDERS), snap(ORDERS, constraints={15: check})
    yield "check added validated", snap(ORDERS), snap(ORDERS, constraints={15: replace(check, validated=True)})
    vcheck = replace(check, validated=True)
    yield "check and index dropped", snap(ORDERS, constraints={15: vcheck}, indexes={12: plain}), snap(ORDERS)
    yield (
        "index and constraint renamed",
        snap(ORDERS, indexes={12: plain}, constraints={15: vcheck}),
        snap(
            ORDERS,
            indexes={12: replace(plain, name="orders_by_amount")},
            constraints={15: replace(vcheck, name="amount_positive")},
        ),
    )
    yield (
        "check dropped and added anew",
        snap(ORDERS, constraints={15: vcheck}),
        snap(ORDERS, constraints={17: replace(vcheck, oid=17, definition="CHECK (amount >= 0)")}),
    )
    fk = Constraint(16, 100, "orders_customer_fk", "f", "FOREIGN KEY (id) REFERENCES customers(id)", True, 0, ("id",))
    yield "foreign key added", snap(ORDERS), snap(ORDERS, constraints={16: fk})
    mood = Enum(50, "public.mood", ("happy", "sad"))
    view = View(60, "public.totals", "v", "SELECT ...", ("id", "amount"))
    fn = Function(70, "public", "total", "integer", "numeric", "f", "abc")
    yield (
        "enum, view, function changed",
        snap(enums={50: mood}, views={60: view}, functions={70: fn}),
        snap(
            enums={50: replace(mood, labels=("happy", "ok"))},
            views={60: replace(view, columns=("id",))},
            functions={70: replace(fn, result="integer")},
        ),
    )
    yield "enum, view, function dropped", snap(enums={50: mood}, views={60: view}, functions={70: fn}), snap()
    yield (
        "enum renamed, view and function redefined",
        snap(enums={50: mood}, views={60: view}, functions={70: fn}),
        snap(
            enums={50: replace(mood, qualname="public.feeling")},
            views={60: replace(view, definition="SELECT 2")},
            functions={70: replace(fn, body="def")},
        ),
    )
    yield (
        "enum, view, function added",
        snap(),
        snap(
            enums={51: Enum(51, "public.mood", ("ok",))},
            views={61: View(61, "public.big_orders", "v", "SELECT ...", ("id",))},
            functions={71: Function(71, "public", "order_total", "integer", "numeric", "f", "h1")},
        ),
    )
    trigger = Function(72, "public", "touch", "", "trigger", "f", "h")
    proc = Function(73, "public", "tidy", "", "void", "p", "h")
    yield "trigger function and procedure dropped", snap(functions={72: trigger, 73: proc}), snap()


_EVERY_CHANGE_IN_FULL: dict[str, list[tuple[str, str, str, str, str | None]]] = {
    "tables dropped and added": [
        (
            "BRK001",
            "public.orders",
            "table public.orders dropped (id, amount, note)",
            "table public.orders",
            "public.orders",
        ),
        ("SAFE001", "public.audit", "table public.audit added (at)", "table public.audit", "public.audit"),
    ],
    "table renamed": [
        (
            "BRK003",
            "public.orders",
            "table public.orders renamed to public.purchases",
            "table public.purchases",
            "public.purchases",
        ),
    ],
    "table recreated": [
        (
            "LCK002",
            "public.orders",
            "table public.orders dropped and re-created: its rows are not carried over unless the migration copies them",
            "table public.orders",
            "public.orders",
        ),
    ],
    "column renamed": [
        ("BRK004", "public.orders.amount", "column amount renamed to total", "table public.orders", "public.orders"),
    ],
    "columns dropped": [
        (
            "BRK002",
            "public.orders.amount",
            "column amount (numeric(10,2)) dropped",
            "table public.orders",
            "public.orders",
        ),
        ("BRK002", "public.orders.note", "column note (text) dropped", "table public.orders", "public.orders"),
    ],
    "columns added": [
        (
            "BRK007",
            "public.orders.extra",
            "column extra integer NOT NULL added without a default",
            "table public.orders",
            "public.orders",
        ),
        (
            "SAFE002",
            "public.orders.flag",
            "column flag boolean NOT NULL added DEFAULT false",
            "table public.orders",
            "public.orders",
        ),
        ("SAFE002", "public.orders.memo", "column memo text added", "table public.orders", "public.orders"),
    ],
    "columns changed": [
        ("BRK005", "public.t.b", "column b type numeric(10,2) → text", "table public.t", "public.t"),
        ("BRK006", "public.t.d", "column d SET NOT NULL", "table public.t", "public.t"),
        ("BRK012", "public.t.e", "column e (NOT NULL) lost its default 1", "table public.t", "public.t"),
        ("SAFE004", "public.t.a", "column a type numeric(10,2) → numeric(12,2)", "table public.t", "public.t"),
        (
            "SAFE004",
            "public.t.c",
            "column c type character varying(10) → character varying(20)",
            "table public.t",
            "public.t",
        ),
        ("SAFE010", "public.t.d", "column d default 0 → 1", "table public.t", "public.t"),
        ("SAFE008", "public.t.f", "column f DROP NOT NULL", "table public.t", "public.t"),
        ("SAFE010", "public.t.g", "column g default no default → 'x'::text", "table public.t", "public.t"),
    ],
    "unique dropped, index added concurrently": [
        (
            "BRK011",
            "public.orders.orders_note_key",
            "unique constraint orders_note_key dropped: UNIQUE (note)",
            "table public.orders",
            "public.orders",
        ),
        (
            "SAFE003",
            "public.orders_note_idx",
            "index orders_note_idx added: CREATE INDEX ... (note) (built CONCURRENTLY)",
            "table public.orders",
            "public.orders",
        ),
    ],
    "index added with a lock": [
        (
            "LCK001",
            "public.orders_note_idx2",
            "index orders_note_idx2 added: CREATE INDEX ... (amount)",
            "table public.orders",
            "public.orders",
        ),
    ],
    "check added not valid": [
        (
            "SAFE009",
            "public.orders.positive",
            "check constraint positive added NOT VALID: CHECK (amount > 0)",
            "table public.orders",
            "public.orders",
        ),
    ],
    "check added validated": [
        (
            "LCK003",
            "public.orders.positive",
            "check constraint positive added (scans the table under lock): CHECK (amount > 0)",
            "table public.orders",
            "public.orders",
        ),
    ],
    "check and index dropped": [
        (
            "SAFE008",
            "public.orders.positive",
            "check constraint positive dropped: CHECK (amount > 0)",
            "table public.orders",
            "public.orders",
        ),
        (
            "SAFE008",
            "public.orders_amount_idx",
            "index orders_amount_idx dropped: CREATE INDEX ... (amount)",
            "table public.orders",
            "public.orders",
        ),
    ],
    "index and constraint renamed": [
        (
            "SAFE011",
            "public.orders.amount_positive",
            "constraint positive renamed to amount_positive",
            "table public.orders",
            "public.orders",
        ),
        (
            "SAFE011",
            "public.orders_by_amount",
            "index orders_amount_idx renamed to orders_by_amount",
            "table public.orders",
            "public.orders",
        ),
    ],
    "check dropped and added anew": [
        (
            "LCK003",
            "public.orders.positive",
            "check constraint positive re-created: CHECK (amount > 0) → CHECK (amount >= 0)",
            "table public.orders",
            "public.orders",
        ),
    ],
    "foreign key added": [
        (
            "LCK003",
            "public.orders.orders_customer_fk",
            "foreign key constraint orders_customer_fk added (scans the table under lock): FOREIGN KEY (id) REFERENCES customers(id)",
            "table public.orders",
            "public.orders",
        ),
    ],
    "enum, view, function changed": [
        ("BRK008", "public.mood", "enum public.mood lost value(s): sad", "type public.mood", None),
        ("SAFE005", "public.mood", "enum public.mood gained value(s): ok", "type public.mood", None),
        ("BRK009", "public.totals", "view public.totals lost column(s): amount", "view public.totals", None),
        (
            "BRK010",
            "public.total(integer)",
            "function public.total(integer) return type numeric → integer",
            "function public.total(integer)",
            None,
        ),
    ],
    "enum, view, function dropped": [
        ("BRK008", "public.mood", "enum public.mood dropped (values: happy, sad)", "type public.mood", None),
        ("BRK009", "public.totals", "view public.totals dropped", "view public.totals", None),
        (
            "BRK010",
            "public.total(integer)",
            "function public.total(integer) dropped",
            "function public.total(integer)",
            None,
        ),
    ],
    "enum renamed, view and function redefined": [
        (
            "BRK008",
            "public.mood",
            "enum public.mood renamed to public.feeling (values: happy, sad)",
            "type public.mood",
            None,
        ),
        ("SAFE007", "public.totals", "view public.totals query changed", "view public.totals", None),
        (
            "SAFE007",
            "public.total(integer)",
            "function public.total(integer) body changed",
            "function public.total(integer)",
            None,
        ),
    ],
    "enum, view, function added": [
        ("SAFE006", "public.mood", "enum public.mood added (ok)", "type public.mood", None),
        ("SAFE006", "public.big_orders", "view public.big_orders added", "view public.big_orders", None),
        (
            "SAFE006",
            "public.order_total(integer)",
            "function public.order_total(integer) added",
            "function public.order_total(integer)",
            None,
        ),
    ],
    "trigger function and procedure dropped": [
        ("SAFE008", "public.touch()", "function public.touch() dropped", "function public.touch()", None),
        ("BRK010", "public.tidy()", "procedure public.tidy() dropped", "function public.tidy()", None),
    ],
}


@pytest.mark.parametrize("name", list(_EVERY_CHANGE_IN_FULL))
def test_every_change_says_what_changed_where(name: str) -> None:
    (before, after) = next((b, a) for n, b, a in _scenarios() if n == name)
    found = [(c.rule, c.object, c.detail, c.group, c.table) for c in diff(before, after)]
    assert found == _EVERY_CHANGE_IN_FULL[name]


def test_every_scenario_has_its_expectation() -> None:
    assert [n for n, _, _ in _scenarios()] == list(_EVERY_CHANGE_IN_FULL)


# ---------------------------------------------------------------------------- the data rules (DATA0xx)
# Which check each change needs (dataplan.Planner, pure once the scratch database's details are
# read) and what a check's counts or a table's size make of it (datachecks), without a database.


def planned(before: Snapshot, after: Snapshot, details: Details | None = None) -> list[tuple[str, str, str]]:
    checks = Planner(diff(before, after), before, after).plan(details or Details())
    return [(c.rule, c.object, c.kind if isinstance(c, RowCheck) else c.operation) for c in checks]


def test_data_checks_planned_for_columns() -> None:
    not_null = table(
        100,
        "orders",
        col("id", 1, notnull=True),
        col("amount", 2, "numeric(10,2)", notnull=True),
        col("note", 3, "text"),
    )
    assert planned(snap(ORDERS), snap(not_null)) == [
        ("DATA001", "public.orders.amount", "nulls"),
        ("DATA008", "public.orders", "scan"),
    ]
    grown = replace(ORDERS, columns={**ORDERS.columns, "sku": col("sku", 4, "text", notnull=True)})
    assert planned(snap(ORDERS), snap(grown)) == [("DATA002", "public.orders.sku", "rows")]
    narrowed = table(
        100, "orders", col("id", 1, notnull=True), col("amount", 2, "numeric(8,2)"), col("note", 3, "text")
    )
    assert planned(snap(ORDERS), snap(narrowed)) == [
        ("DATA006", "public.orders.amount", "fits-type"),
        ("DATA008", "public.orders", "rewrite"),
    ]


def test_data_checks_planned_for_indexes_and_constraints() -> None:
    unique = Index(20, "public", "orders_note_key", 100, "CREATE UNIQUE INDEX ...", True, True, False, False, ("note",))
    before, after = snap(ORDERS), snap(ORDERS, indexes={20: unique})
    assert Planner(diff(before, after), before, after).needed() == ([20], [])
    assert planned(before, after, Details(indexes={20: (["note"], None, False)})) == [
        ("DATA003", "public.orders_note_key", "duplicates"),
        ("DATA009", "public.orders", "index build"),
    ]
    check = Constraint(15, 100, "positive", "c", "CHECK (amount > 0)", True, 0, ("amount",))
    assert planned(before, snap(ORDERS, constraints={15: check}), Details(checks={15: "amount > 0"})) == [
        ("DATA004", "public.orders.positive", "check"),
        ("DATA008", "public.orders", "scan"),
    ]
    customers = table(200, "customers", col("id", 1, notnull=True))
    fk = Constraint(16, 100, "orders_id_fk", "f", "FOREIGN KEY (id) REFERENCES customers(id)", True, 0, ("id",))
    details = Details(foreign_keys={16: (["id"], 200, ["id"], "s")})
    assert planned(snap(ORDERS, customers), snap(ORDERS, customers, constraints={16: fk}), details) == [
        ("DATA005", "public.orders.orders_id_fk", "foreign-key"),
        ("DATA008", "public.orders", "scan"),
    ]


def test_data_check_planned_for_a_removed_enum_value() -> None:
    mood = Enum(50, "public.mood", ("happy", "sad"))
    people = table(300, "people", col("id", 1), col("m", 2, "public.mood"))
    before = snap(people, enums={50: mood})
    after = snap(people, enums={50: replace(mood, labels=("happy",))})
    assert planned(before, after) == [("DATA007", "public.people.m", "enum-values")]


def _row_check(rule: str = "DATA001", unknown: str | None = None) -> RowCheck:
    from psycopg import sql

    return RowCheck(
        0,
        "nulls",
        rule,
        "public.orders.amount",
        Rel("public", "orders"),
        "NULL in amount",
        "SET NOT NULL will fail",
        violation=sql.SQL("t.amount IS NULL"),
        unknown=unknown,
    )


def test_data_findings_from_counts() -> None:
    fact = datachecks.Facts(True, heap_bytes=8192, total_bytes=16384, rows=100, can_select=True)
    found = datachecks._row_finding(_row_check(), fact, examined=100, violating=3, percent=None, elapsed=1)
    assert (found.rule, found.status, found.violating_rows, found.severity) == ("DATA001", "violations", 3, "breaking")
    clean = datachecks._row_finding(_row_check(), fact, examined=100, violating=0, percent=None, elapsed=1)
    assert (clean.rule, clean.status, clean.severity) == ("DATA012", "none", "safe")
    sampled = datachecks._row_finding(_row_check(), fact, examined=40, violating=0, percent=2.5, elapsed=1)
    assert (sampled.rule, sampled.status, sampled.sampled, sampled.severity) == (
        "DATA011",
        "none-in-sample",
        True,
        "unknown",
    )


def test_data_check_that_cannot_be_asked_is_unknown() -> None:
    """No connection is used: a check known to be unaskable, no read-only role to ask as, or a
    table that role may not read, is DATA010 without a query."""
    fact = datachecks.Facts(True, heap_bytes=8192, total_bytes=8192, rows=1, can_select=True)
    scrub = Scrubber([])
    unknown = datachecks._row_check(
        None,
        _row_check(unknown="its index could not be read"),
        fact,  # type: ignore[arg-type]
        datachecks.Settings(),
        scrub,
    )
    assert (unknown.rule, unknown.status, unknown.severity) == ("DATA010", "unknown", "unknown")
    no_role = datachecks._row_check(None, _row_check(), fact, datachecks.Settings(), scrub)  # type: ignore[arg-type]
    assert no_role.rule == "DATA010" and "no read-only role" in no_role.detail
    reader = datachecks.Settings(role="pg_read_all_data")
    denied = datachecks._row_check(None, _row_check(), replace(fact, can_select=False), reader, scrub)  # type: ignore[arg-type]
    assert denied.rule == "DATA010" and "permission denied" in denied.detail


def test_data_findings_from_table_sizes() -> None:
    settings = datachecks.Settings(large_bytes=1024**2)
    large = datachecks.Facts(True, heap_bytes=4 * 1024**2, total_bytes=5 * 1024**2, rows=10_000, can_select=True)
    small = replace(large, heap_bytes=8192, total_bytes=16384)
    rewrite = SizeCheck(0, "public.orders", Rel("public", "orders"), "rewrite", "ACCESS EXCLUSIVE", "DATA008")
    build = SizeCheck(0, "public.orders", Rel("public", "orders"), "index build", "SHARE", "DATA009")
    assert [
        (f.rule, f.status, f.severity)
        for f in (
            datachecks._size(rewrite, large, settings),
            datachecks._size(build, large, settings),
            datachecks._size(rewrite, small, settings),
        )
    ] == [("DATA008", "large", "lock-heavy"), ("DATA009", "large", "lock-heavy"), ("DATA013", "small", "safe")]


def _asserted_rule_ids() -> set[str]:
    """Rule ids this module asserts: string constants inside assert statements, or inside the
    parameters of a parametrized test (each of which asserts its rule)."""
    import ast
    import re
    from pathlib import Path

    shape = re.compile(r"(BRK|LCK|SAFE|DATA)\d{3}")
    tree = ast.parse(Path(__file__).read_text())
    places: list[ast.AST] = [n for n in ast.walk(tree) if isinstance(n, ast.Assert)]
    for fn in (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")):
        places.extend(d for d in fn.decorator_list if "parametrize" in ast.unparse(d))
    return {
        n.value
        for place in places
        for n in ast.walk(place)
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and shape.fullmatch(n.value)
    }


def test_every_rule_has_a_unit_case() -> None:
    """Every rule of rules.RULES (the data rules included) is asserted by a case in this module."""
    asserted = _asserted_rule_ids()
    assert sorted(set(RULES) - asserted) == [], "rules without a unit case"
    assert sorted(asserted - set(RULES)) == [], "cases naming rules that do not exist"
