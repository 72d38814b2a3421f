"""The verbs, as plain functions: each takes a Context, its options record and a sink, and returns a result.

They emit events (events.py) and never print; report/ renders what they emit.
"""

from dbos_migrate.engine.options import (
    DownOptions,
    DropOptions,
    HistoryOptions,
    PlanOptions,
    StatusOptions,
    UpOptions,
    UrlOptions,
    WaitOptions,
)
from dbos_migrate.verbs.drop import drop
from dbos_migrate.verbs.inspect import history, status, url, wait
from dbos_migrate.verbs.migrate import down, plan, up
from dbos_migrate.verbs.validate import merge_validations, validate

__all__ = [
    "DownOptions",
    "DropOptions",
    "HistoryOptions",
    "PlanOptions",
    "StatusOptions",
    "UpOptions",
    "UrlOptions",
    "WaitOptions",
    "down",
    "drop",
    "history",
    "merge_validations",
    "plan",
    "status",
    "up",
    "url",
    "validate",
    "wait",
]
