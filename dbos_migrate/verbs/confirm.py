"""The typed confirmation that `down` on production and `drop` always ask for: the app
database's name typed on a terminal, or `--confirm NAME`, or `--yes`; anything else (an
empty answer, end of input, another name, no terminal) refuses with exit 5 and changes
nothing (docs/behaviour.md, "The production guard"). One function, so the two verbs cannot
drift apart."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dbos_migrate.errors import GuardRefused

if TYPE_CHECKING:
    from dbos_migrate.engine.frame import Run
    from dbos_migrate.engine.options import ConfirmOptions


def confirm_by_name(run: Run[ConfirmOptions], *, refusing: str, prompt: str, instead: str, done: str) -> None:
    """Return when the operator confirmed; else raise GuardRefused (exit 5).

    `refusing` completes "refusing to ... NAME" ("roll back production database"), `prompt`
    completes "Type the app database name (NAME) to ..." ("roll it back"), `instead` completes
    "pass --confirm NAME (or --yes) to ... without a prompt" ("run it"), and `done` says what
    did not happen ("nothing was run")."""
    name = run.target.app_database
    how = f"pass --confirm {name} (or --yes) to {instead} without a prompt"
    if run.options.confirm is not None:
        if run.options.confirm == name:
            return
        raise GuardRefused(f"--confirm {run.options.confirm!r} does not match the app database {name!r}; {done}", how)
    if run.options.yes:
        return
    if run.ctx.ask is None:
        raise GuardRefused(f"refusing to {refusing} {name!r} without confirmation (no terminal to ask on); {done}", how)
    answer = run.ctx.ask(f"Type the app database name ({name}) to {prompt}: ", False)
    if answer is None or answer.strip() != name:
        raise GuardRefused(f"confirmation did not match the app database name; {done}", how)
