"""What one rehearsal found: the records that the rehearsal fills in, the gate judges and the
renderers show (JSON's `rehearsal` object, docs/rehearsal.md). Kept apart from the code that
runs a rehearsal so the gate and report/ read them without importing it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from dbos_migrate.events import FeatureEvent
from dbos_migrate.model import CommandResult
from dbos_migrate.rehearse.datachecks import DataChecks, Finding
from dbos_migrate.rehearse.rules import BREAKING, LOCK_HEAVY, SAFE, Change
from dbos_migrate.rehearse.workflows import WorkflowReport

if TYPE_CHECKING:
    from dbos_migrate.rehearse.rollback import Loss, RollbackCheck


@dataclass
class Verdict:
    """JSON's `rehearsal.verdict`: refuse or pass, and why, in one line."""

    refuse: bool
    message: str
    strict: bool = False
    reasons: list[str] = field(default_factory=list)  # data, strict, data-unknown, workflows, workflows-unknown


@dataclass(frozen=True)
class Credentials:
    """JSON's `rehearsal.credentials`: who the commands log in as (rehearse/sandbox.py's mode:
    temporary-role, rehearse-url or shared), and the limits that come with it."""

    mode: str
    role: str | None
    limits: list[str]


@dataclass
class Rehearsal:
    """What one rehearsal did: JSON's `rehearsal` object (the changes go in `changes[]`)."""

    scratch_database: str
    instance: str
    copy_method: str = "not started"
    version_tables: list[str] = field(default_factory=list)
    copy_warnings: list[str] = field(default_factory=list)
    leftovers_removed: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    commands: list[CommandResult] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)
    created: bool = False
    dropped: bool = False
    findings: list[Finding] = field(default_factory=list)  # in the order of the changes they concern
    data_checks: DataChecks | None = None
    workflows: WorkflowReport | None = None
    verdict: Verdict | None = None
    rollback: RollbackCheck | None = None  # plan --rehearse: does database.rollback restore? (rollback.py)
    destroys: list[Loss] | None = None  # down --rehearse: what the rollback would destroy
    credentials: Credentials | None = None
    _grouped: dict[int, list[Finding]] = field(default_factory=dict, repr=False, compare=False)
    _grouped_key: tuple[int, int] = field(default=(0, -1), repr=False, compare=False)

    def findings_of(self, index: int) -> list[Finding]:
        """The findings of change `index`, in order (grouped once: renderers ask for every change)."""
        key = (id(self.findings), len(self.findings))
        if self._grouped_key != key:
            self._grouped = {}
            for finding in self.findings:
                self._grouped.setdefault(finding.change, []).append(finding)
            self._grouped_key = key
        return self._grouped.get(index, [])

    @property
    def breaking(self) -> list[Change]:
        return [c for c in self.changes if c.severity == BREAKING]

    def counts(self) -> dict[str, int]:
        return {sev: sum(1 for c in self.changes if c.severity == sev) for sev in (BREAKING, LOCK_HEAVY, SAFE)}


@dataclass(frozen=True)
class RehearsalDone(FeatureEvent):
    """A rehearsal classified its changes; `gate` says whether breaking ones will refuse the run."""

    rehearsal: Rehearsal
    gate: bool
