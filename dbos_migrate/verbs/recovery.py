"""After a failed deploy: the last run's outcome from the history, and what to run next
(docs/recovery.md)."""

from __future__ import annotations

import shlex

from dbos_migrate.engine.options import TargetOptions
from dbos_migrate.model import HistoryRow, LastRun, Resolution


def last_run(rows: list[HistoryRow], where: Resolution, options: TargetOptions) -> LastRun | None:
    """The newest run among `rows` (newest first): its outcome, its failed command, and the
    recovery command line with the target as written and the password masked."""
    if not rows:
        return None
    run_id = rows[0].run_id
    mine = sorted((r for r in rows if r.run_id == run_id), key=lambda r: r.command_index)
    failed = next((r for r in mine if r.status != "succeeded"), None)
    last = mine[-1]
    found = LastRun(
        run_id, last.direction, failed.status if failed else "succeeded", last.finished_at or last.started_at
    )
    if failed is None:
        return found
    found.failed_index, found.failed_command, found.exit_code = (
        failed.command_index,
        failed.command,
        failed.exit_code,
    )
    found.at = failed.finished_at or failed.started_at
    found.next_command = down_command(where, options)
    if last.direction == "up":
        found.next_reason = (
            "roll back what the failed deploy left (rehearse it first: add --rehearse --dry-run "
            "to see what it destroys)"
        )
    else:
        found.next_reason = f"the rollback itself failed at command {failed.command_index}: fix it, then run it again"
    return found


def down_command(where: Resolution, options: TargetOptions) -> str:
    """`dbos-migrate down` aimed where this status looked: config, target as written (masked)."""
    words = ["dbos-migrate", "down"]
    if options.config:
        words += ["-c", options.config]
    if where.target:
        words += ["--db-url", where.target]
    if options.app_db_name:
        words += ["--app-db-name", options.app_db_name]
    return " ".join(shlex.quote(w) for w in words)
