"""Enum types: dropped or renamed, values lost (breaking) or gained (safe)."""

from __future__ import annotations

from dbos_migrate.rehearse.diff.base import Comparison


def compare(cmp: Comparison) -> None:
    after_by_name = {e.qualname: e for e in cmp.a.enums.values()}
    before_names = {e.qualname for e in cmp.b.enums.values()}
    for old in cmp.b.enums.values():
        group = f"type {old.qualname}"
        new = after_by_name.get(old.qualname)
        if new is None:
            renamed = cmp.a.enums.get(old.oid)
            what = f"renamed to {renamed.qualname}" if renamed else "dropped"
            cmp.add("BRK008", old.qualname, f"enum {old.qualname} {what} (values: {', '.join(old.labels)})", group)
            continue
        lost = [v for v in old.labels if v not in new.labels]
        gained = [v for v in new.labels if v not in old.labels]
        if lost:
            cmp.add("BRK008", old.qualname, f"enum {old.qualname} lost value(s): {', '.join(lost)}", group)
        if gained:
            cmp.add("SAFE005", old.qualname, f"enum {old.qualname} gained value(s): {', '.join(gained)}", group)
    for new in cmp.a.enums.values():
        if new.qualname not in before_names and new.oid not in cmp.b.enums:
            cmp.add(
                "SAFE006",
                new.qualname,
                f"enum {new.qualname} added ({', '.join(new.labels)})",
                f"type {new.qualname}",
            )
