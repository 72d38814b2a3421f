"""Views and materialized views: dropped, renamed, lost columns, changed queries."""

from __future__ import annotations

from dbos_migrate.rehearse.diff.base import Comparison


def compare(cmp: Comparison) -> None:
    by_name = {v.qualname: v for v in cmp.a.views.values()}
    seen: set[int] = set()
    for old in cmp.b.views.values():
        kind = "materialized view" if old.kind == "m" else "view"
        group = f"view {old.qualname}"
        new = by_name.get(old.qualname)
        if new is None:
            renamed = cmp.a.views.get(old.oid)
            what = f"renamed to {renamed.qualname}" if renamed else "dropped"
            if renamed:
                seen.add(renamed.oid)
            cmp.add("BRK009", old.qualname, f"{kind} {old.qualname} {what}", group)
            continue
        seen.add(new.oid)
        lost = [c for c in old.columns if c not in new.columns]
        if lost:
            cmp.add("BRK009", old.qualname, f"{kind} {old.qualname} lost column(s): {', '.join(lost)}", group)
        elif old.definition != new.definition:
            cmp.add("SAFE007", old.qualname, f"{kind} {old.qualname} query changed", group)
    for new in cmp.a.views.values():
        if new.oid not in seen:
            kind = "materialized view" if new.kind == "m" else "view"
            cmp.add("SAFE006", new.qualname, f"{kind} {new.qualname} added", f"view {new.qualname}")
