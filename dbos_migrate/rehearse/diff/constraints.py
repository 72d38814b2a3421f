"""Constraints of a matched table: primary key, unique, exclusion, foreign key, check."""

from __future__ import annotations

from dbos_migrate.rehearse.catalog import Table
from dbos_migrate.rehearse.diff.base import Comparison


def compare(cmp: Comparison, old: Table, new: Table, how: str, gone: set[str], group: str) -> None:
    table = new.qualname
    retyped = {c for c in old.columns if c in new.columns and old.columns[c].type != new.columns[c].type}
    olds = [c for c in cmp.b.constraints.values() if c.table_oid == old.oid]
    news = {c.oid: c for c in cmp.a.constraints.values() if c.table_oid == new.oid}
    by_name = {c.name: c for c in news.values()}
    kinds = {"p": "primary key", "u": "unique", "x": "exclusion", "f": "foreign key", "c": "check"}
    for con in olds:
        now = news.pop(con.oid, None)
        if now is not None:
            if now.name != con.name:
                cmp.add(
                    "SAFE011",
                    f"{table}.{now.name}",
                    f"constraint {con.name} renamed to {now.name}",
                    group,
                    table,
                )
            by_name.pop(now.name, None)
            continue
        now = by_name.pop(con.name, None)
        kind = kinds[con.type]
        if now is not None:
            news.pop(now.oid, None)
            if now.definition == con.definition or set(con.columns) & retyped:
                continue  # rebuilt by ALTER COLUMN TYPE: reported as the type change
            # NOT VALID: no scan; on a re-created table: no old rows were locked
            rule = "SAFE009" if not now.validated else "LCK003" if how == "same" else "SAFE007"
            cmp.add(
                rule,
                f"{table}.{con.name}",
                f"{kind} constraint {con.name} re-created: {con.definition} → {now.definition}",
                group,
                table,
            )
            continue
        if con.columns and set(con.columns) <= gone:
            continue  # went with its column(s): reported as dropped/renamed columns
        rule = "SAFE008" if con.type == "c" else "BRK011"
        cmp.add(
            rule,
            f"{table}.{con.name}",
            f"{kind} constraint {con.name} dropped: {con.definition}",
            group,
            table,
        )
    for now in news.values():
        kind = kinds[now.type]
        obj = f"{table}.{now.name}"
        if how != "same":
            continue  # a new (re-created) table: nothing held a lock on old rows
        if not now.validated:
            cmp.add(
                "SAFE009",
                obj,
                f"{kind} constraint {now.name} added NOT VALID: {now.definition}",
                group,
                table,
            )
        elif now.type in "pux" and now.index_oid in cmp.b.indexes:
            cmp.add(
                "SAFE009",
                obj,
                f"{kind} constraint {now.name} added using an existing index: {now.definition}",
                group,
                table,
            )
        else:
            how_locked = "builds its index" if now.type in "pux" else "scans the table"
            cmp.add(
                "LCK003",
                obj,
                f"{kind} constraint {now.name} added ({how_locked} under lock): {now.definition}",
                group,
                table,
            )
