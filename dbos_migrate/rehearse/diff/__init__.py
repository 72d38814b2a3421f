"""The differ: classify every difference between two catalog snapshots (pure, no I/O).

Split by object kind like Alembic's autogenerate compare: tables (with their columns,
constraints and indexes), enum types, views, functions. Each module adds Change records
to one Comparison; `diff` orders them for reading.
"""

from __future__ import annotations

from dbos_migrate.rehearse.catalog import Snapshot
from dbos_migrate.rehearse.diff import functions, tables, types, views
from dbos_migrate.rehearse.diff.base import Comparison
from dbos_migrate.rehearse.diff.columns import widened
from dbos_migrate.rehearse.rules import SEVERITY_RANK, Change


def diff(before: Snapshot, after: Snapshot) -> list[Change]:
    """Every classified change, grouped by the object it concerns, worst first in a group."""
    comparison = Comparison(before, after)
    tables.compare(comparison)
    types.compare(comparison)
    views.compare(comparison)
    functions.compare(comparison)
    order: dict[str, int] = {}
    for change in comparison.changes:
        order.setdefault(change.group, len(order))
    return sorted(comparison.changes, key=lambda c: (order[c.group], SEVERITY_RANK[c.severity]))


__all__ = ["Comparison", "diff", "widened"]
