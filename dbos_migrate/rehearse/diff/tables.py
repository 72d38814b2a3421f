"""Tables: matched by OID (survives renames), by name (dropped and re-created), then by
identical columns (a rename done as drop + create); then each pair is compared."""

from __future__ import annotations

from dbos_migrate.rehearse.catalog import Table
from dbos_migrate.rehearse.diff import columns, constraints, indexes
from dbos_migrate.rehearse.diff.base import Comparison, indexes_of


def compare(cmp: Comparison) -> None:
    pairs, dropped, added = match(cmp)
    for old, new, how in pairs:
        _table(cmp, old, new, how)
    for old in dropped:
        cols = ", ".join(old.columns) or "no columns"
        cmp.add(
            "BRK001",
            old.qualname,
            f"table {old.qualname} dropped ({cols})",
            f"table {old.qualname}",
            old.qualname,
        )
    for new in added:
        group = f"table {new.qualname}"
        cmp.add(
            "SAFE001",
            new.qualname,
            f"table {new.qualname} added ({', '.join(new.columns)})",
            group,
            new.qualname,
        )
        for index in indexes_of(cmp.a, new.oid):
            if not index.constraint_backed:
                cmp.add(
                    "SAFE003",
                    f"{index.schema}.{index.name}",
                    f"index {index.name} on new table: {index.definition}",
                    group,
                    new.qualname,
                )


def match(cmp: Comparison) -> tuple[list[tuple[Table, Table, str]], list[Table], list[Table]]:
    """(pairs with how they matched: same, recreated, shape), dropped tables, added tables."""
    pairs: list[tuple[Table, Table, str]] = []
    used: set[int] = set()
    rest: list[Table] = []
    for old in sorted(cmp.b.tables.values(), key=lambda t: t.qualname):
        new = cmp.a.tables.get(old.oid)
        if new is not None:
            pairs.append((old, new, "same"))
            used.add(new.oid)
        else:
            rest.append(old)
    by_name = {t.qualname: t for t in cmp.a.tables.values()}
    dropped: list[Table] = []
    for old in rest:
        new = by_name.get(old.qualname)
        if new is not None and new.oid not in used:
            pairs.append((old, new, "recreated"))
            used.add(new.oid)
        else:
            dropped.append(old)
    added = sorted((t for t in cmp.a.tables.values() if t.oid not in used), key=lambda t: t.qualname)
    for old in list(dropped):
        twins = [t for t in added if t.shape == old.shape and t.columns]
        if len(twins) == 1:
            pairs.append((old, twins[0], "shape"))
            dropped.remove(old)
            added.remove(twins[0])
    return pairs, dropped, added


def _table(cmp: Comparison, old: Table, new: Table, how: str) -> None:
    name = new.qualname
    group = f"table {name}"
    if how == "shape":
        cmp.add(
            "BRK003",
            old.qualname,
            f"table {old.qualname} dropped and {name} created with the same columns: looks like a "
            "rename, and its rows are not carried over",
            group,
            name,
        )
        return
    if old.qualname != name:
        cmp.add("BRK003", old.qualname, f"table {old.qualname} renamed to {name}", group, name)
    if how == "recreated":
        cmp.add(
            "LCK002",
            name,
            f"table {name} dropped and re-created: its rows are not carried over unless the migration copies them",
            group,
            name,
        )
    elif old.kind == "r" and old.relfilenode != new.relfilenode:
        cmp.add("LCK002", name, f"table {name} rewritten (new relfilenode)", group, name)
    gone = columns.compare(cmp, old, new, how, group)
    constraints.compare(cmp, old, new, how, gone, group)
    indexes.compare(cmp, old, new, how, gone, group)
