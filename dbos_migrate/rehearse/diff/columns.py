"""Columns: dropped, renamed (same attnum, or drop + add of the same type), added, retyped,
NOT NULL and defaults; and `widened`, which tells a safe type change from a breaking one."""

from __future__ import annotations

import re

from dbos_migrate.rehearse.catalog import Column, Table
from dbos_migrate.rehearse.diff.base import Comparison

_VARCHAR = re.compile(r"character varying\((\d+)\)")
_NUMERIC = re.compile(r"numeric\((\d+),(\d+)\)")
_UNBOUNDED_TEXT = ("text", "character varying")


def widened(old: str, new: str) -> bool:
    """Whether `old` → `new` only widens: every old value fits, and old code reads the same
    kind of value. int → bigint is *not* a widening here: node-postgres returns int8 as a
    string, so old TypeScript code would break."""
    if old.endswith("[]") and new.endswith("[]"):
        return widened(old[:-2], new[:-2])
    if old in _UNBOUNDED_TEXT and new in _UNBOUNDED_TEXT:
        return True
    v_old, v_new = _VARCHAR.fullmatch(old), _VARCHAR.fullmatch(new)
    if v_old and (new in _UNBOUNDED_TEXT or (v_new and int(v_new[1]) >= int(v_old[1]))):
        return True
    n_old, n_new = _NUMERIC.fullmatch(old), _NUMERIC.fullmatch(new)
    if n_old and new == "numeric":
        return True
    return bool(n_old and n_new and n_new[2] == n_old[2] and int(n_new[1]) >= int(n_old[1]))


def compare(cmp: Comparison, old: Table, new: Table, how: str, group: str) -> set[str]:
    """Compare columns; returns the names of old columns that are gone (dropped or renamed)
    so the constraints and indexes they took with them are not reported twice."""
    table = new.qualname
    pairs: list[tuple[Column, Column]] = []
    matched: set[str] = set()
    lost: list[Column] = []
    for col in old.columns.values():
        if col.name in new.columns:
            pairs.append((col, new.columns[col.name]))
            matched.add(col.name)
        else:
            lost.append(col)
    gone = {c.name for c in lost}
    if how == "same":  # ALTER TABLE RENAME COLUMN keeps attnum
        by_num = {c.attnum: c for c in new.columns.values()}
        for col in list(lost):
            twin = by_num.get(col.attnum)
            if twin is not None and twin.name not in old.columns and twin.name not in matched:
                cmp.add("BRK004", f"{table}.{col.name}", f"column {col.name} renamed to {twin.name}", group, table)
                pairs.append((col, twin))
                matched.add(twin.name)
                lost.remove(col)
    fresh = [c for c in new.columns.values() if c.name not in matched]
    for col in list(lost):  # a rename done as DROP COLUMN + ADD COLUMN of the same type
        twins = [c for c in fresh if c.type == col.type]
        if len(twins) == 1 and sum(1 for c in lost if c.type == col.type) == 1:
            cmp.add(
                "BRK004",
                f"{table}.{col.name}",
                f"column {col.name} ({col.type}) dropped and {twins[0].name} added with the same "
                "type: looks like a rename, and its values are not carried over",
                group,
                table,
            )
            lost.remove(col)
            fresh.remove(twins[0])
    for col in lost:
        cmp.add("BRK002", f"{table}.{col.name}", f"column {col.name} ({col.type}) dropped", group, table)
    for col in fresh:
        obj = f"{table}.{col.name}"
        if col.notnull and not col.has_default:
            cmp.add("BRK007", obj, f"column {col.name} {col.type} NOT NULL added without a default", group, table)
        else:
            what = "NOT NULL " if col.notnull else ""
            extra = f" DEFAULT {col.default}" if col.default is not None else ""
            cmp.add(
                "SAFE002",
                obj,
                f"column {col.name} {col.type} {what}added{extra}".replace("  ", " "),
                group,
                table,
            )
    for was, now in pairs:
        _column(cmp, table, was, now, group)
    return gone


def _column(cmp: Comparison, table: str, was: Column, now: Column, group: str) -> None:
    obj = f"{table}.{now.name}"
    retyped = was.type != now.type
    if retyped:
        rule = "SAFE004" if widened(was.type, now.type) else "BRK005"
        cmp.add(rule, obj, f"column {now.name} type {was.type} → {now.type}", group, table)
    if now.notnull and not was.notnull:
        cmp.add("BRK006", obj, f"column {now.name} SET NOT NULL", group, table)
    elif was.notnull and not now.notnull:
        cmp.add("SAFE008", obj, f"column {now.name} DROP NOT NULL", group, table)
    if was.default is not None and now.default is None and not now.has_default:
        if now.notnull:
            cmp.add("BRK012", obj, f"column {now.name} (NOT NULL) lost its default {was.default}", group, table)
    elif was.default != now.default and not retyped and now.default is not None:
        before = "no default" if was.default is None else was.default
        cmp.add("SAFE010", obj, f"column {now.name} default {before} → {now.default}", group, table)
