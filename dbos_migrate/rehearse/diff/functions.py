"""Functions, procedures and aggregates: dropped, renamed, re-signatured, retyped, rewritten."""

from __future__ import annotations

from dbos_migrate.rehearse.catalog import Function
from dbos_migrate.rehearse.diff.base import Comparison


def compare(cmp: Comparison) -> None:
    by_key = {f.key: f for f in cmp.a.functions.values()}
    seen: set[int] = set()
    dropped: list[Function] = []
    for old in cmp.b.functions.values():
        new = by_key.get(old.key)
        if new is None:
            dropped.append(old)
            continue
        seen.add(new.oid)
        group = f"function {old.key}"
        if new.result != old.result:
            cmp.add("BRK010", old.key, f"{_fkind(old)} {old.key} return type {old.result} → {new.result}", group)
        elif new.body != old.body:
            cmp.add("SAFE007", old.key, f"{_fkind(old)} {old.key} body changed", group)
    for old in dropped:
        group = f"function {old.key}"
        renamed = cmp.a.functions.get(old.oid)
        overloads = [
            f for f in cmp.a.functions.values() if f.oid not in seen and f.schema == old.schema and f.name == old.name
        ]
        if renamed is not None:
            seen.add(renamed.oid)
            detail = f"{_fkind(old)} {old.key} renamed to {renamed.key}"
        elif len(overloads) == 1:
            seen.add(overloads[0].oid)
            detail = f"{_fkind(old)} {old.key} replaced by {overloads[0].key} (signature changed)"
        else:
            detail = f"{_fkind(old)} {old.key} dropped"
        trigger = old.result in ("trigger", "event_trigger")
        cmp.add("SAFE008" if trigger else "BRK010", old.key, detail, group)
    for new in cmp.a.functions.values():
        if new.oid not in seen:
            cmp.add("SAFE006", new.key, f"{_fkind(new)} {new.key} added", f"function {new.key}")


def _fkind(func: Function) -> str:
    return {"p": "procedure", "a": "aggregate", "w": "window function"}.get(func.kind, "function")
