"""Indexes of a matched table; constraint-backed ones are compared as constraints."""

from __future__ import annotations

from dbos_migrate.rehearse.catalog import Index, Table
from dbos_migrate.rehearse.diff.base import Comparison, indexes_of


def compare(cmp: Comparison, old: Table, new: Table, how: str, gone: set[str], group: str) -> None:
    """Constraint-backed indexes are left to _constraints; the others are compared here."""
    table = new.qualname
    news = {i.oid: i for i in indexes_of(cmp.a, new.oid)}
    by_name = {i.name: i for i in news.values()}
    for idx in indexes_of(cmp.b, old.oid):
        now = news.pop(idx.oid, None) or cmp.a.indexes.get(idx.oid)
        if now is not None:
            by_name.pop(now.name, None)
            if now.name != idx.name and not (now.constraint_backed or idx.constraint_backed):
                cmp.add(
                    "SAFE011",
                    f"{now.schema}.{now.name}",
                    f"index {idx.name} renamed to {now.name}",
                    group,
                    table,
                )
            continue
        now = by_name.pop(idx.name, None)
        if now is not None:
            news.pop(now.oid, None)
            if now.definition == idx.definition or now.constraint_backed or idx.constraint_backed:
                continue  # rebuilt (ALTER COLUMN TYPE): reported as the type change
            _new_index(cmp, now, how, group, table, f"index {now.name} re-created: {idx.definition} → ")
            continue
        if idx.constraint_backed or (idx.columns and set(idx.columns) <= gone):
            continue
        rule = "BRK011" if idx.unique else "SAFE008"
        kind = "unique index" if idx.unique else "index"
        cmp.add(rule, f"{idx.schema}.{idx.name}", f"{kind} {idx.name} dropped: {idx.definition}", group, table)
    for now in news.values():
        if not now.constraint_backed and now.oid not in cmp.b.indexes:
            _new_index(cmp, now, how, group, table, f"index {now.name} added: ")


def _new_index(cmp: Comparison, idx: Index, how: str, group: str, table: str, prefix: str) -> None:
    obj = f"{idx.schema}.{idx.name}"
    if how != "same":
        cmp.add("SAFE003", obj, prefix + idx.definition, group, table)
    elif idx.concurrently:
        cmp.add("SAFE003", obj, prefix + idx.definition + " (built CONCURRENTLY)", group, table)
    else:
        cmp.add("LCK001", obj, prefix + idx.definition, group, table)
