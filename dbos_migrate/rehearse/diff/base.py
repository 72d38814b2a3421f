"""What every compare module shares: the two snapshots and the list of changes found."""

from __future__ import annotations

from dbos_migrate.rehearse.catalog import Index, Snapshot
from dbos_migrate.rehearse.rules import Change


class Comparison:
    """`b` is the snapshot before the commands ran, `a` the one after."""

    def __init__(self, before: Snapshot, after: Snapshot) -> None:
        self.b = before
        self.a = after
        self.changes: list[Change] = []

    def add(self, rule: str, obj: str, detail: str, group: str, table: str | None = None) -> None:
        self.changes.append(Change(rule, obj, detail, group, table))


def indexes_of(snap: Snapshot, table_oid: int) -> list[Index]:
    return sorted((i for i in snap.indexes.values() if i.table_oid == table_oid), key=lambda i: i.name)
