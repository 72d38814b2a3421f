"""The rule table: every kind of change a rehearsal can report, with a stable id and a hint.

Rule ids never change meaning (scripts and reviews refer to them); docs/rehearsal.md
lists the same table for people.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

BREAKING = "breaking"
LOCK_HEAVY = "lock-heavy"
SAFE = "safe"
#: Only data checks have it: the check could not tell (timed out, no privilege, a sample).
UNKNOWN = "unknown"
SEVERITY_RANK = {BREAKING: 0, LOCK_HEAVY: 1, UNKNOWN: 2, SAFE: 3}


@dataclass(frozen=True)
class Rule:
    """A stable rule id (it never changes meaning), its short name, severity and hint."""

    id: str
    name: str
    severity: str
    what: str
    hint: str


RULES: dict[str, Rule] = {
    r.id: r
    for r in (
        Rule(
            "BRK001",
            "dropped-table",
            BREAKING,
            "a table was dropped",
            "expand/contract: ship code that no longer uses the table first, and drop it in a later "
            "deploy, once no workflow of the previous version can still run",
        ),
        Rule(
            "BRK002",
            "dropped-column",
            BREAKING,
            "a column was dropped",
            "ship code that no longer reads or writes the column first (make it nullable or give it a "
            "DEFAULT so old INSERTs still work), and drop it in a later deploy",
        ),
        Rule(
            "BRK003",
            "renamed-table",
            BREAKING,
            "a table was renamed or moved (or dropped and re-created with the same columns)",
            "do not rename in place: create the new table (or a view with the new name), dual-write and "
            "backfill, switch the code, and drop the old name in a later deploy",
        ),
        Rule(
            "BRK004",
            "renamed-column",
            BREAKING,
            "a column was renamed (or dropped and one of the same type added)",
            "add the new column, backfill and dual-write (trigger or code), switch reads, and drop the "
            "old column in a later deploy",
        ),
        Rule(
            "BRK005",
            "column-type-changed",
            BREAKING,
            "a column's type changed (not a pure widening)",
            "add a column of the new type, backfill in batches, dual-write, switch, and drop the old one "
            "later; an in-place ALTER TYPE also rewrites the table under an ACCESS EXCLUSIVE lock",
        ),
        Rule(
            "BRK006",
            "set-not-null",
            BREAKING,
            "an existing column became NOT NULL",
            "old code may still write NULL: backfill, give the column a DEFAULT, add CHECK (col IS NOT "
            "NULL) NOT VALID and VALIDATE it, and SET NOT NULL once every running version sets the column",
        ),
        Rule(
            "BRK007",
            "not-null-column-without-default",
            BREAKING,
            "a NOT NULL column without a default was added to an existing table",
            "old code's INSERTs do not set the new column and will fail: add it nullable or with a "
            "DEFAULT, backfill, and add NOT NULL in a later deploy",
        ),
        Rule(
            "BRK008",
            "enum-value-dropped",
            BREAKING,
            "an enum lost values (recreated narrower, value renamed, or type dropped/renamed)",
            "rows and old code may still use the value: stop writing it, move rows to another value, and "
            "remove it in a later deploy; adding values is safe",
        ),
        Rule(
            "BRK009",
            "dropped-view",
            BREAKING,
            "a view was dropped or renamed, or lost columns",
            "keep the view (or a compatible one with the same name and columns) until the previous "
            "version is gone; drop it in a later deploy",
        ),
        Rule(
            "BRK010",
            "dropped-function",
            BREAKING,
            "a function or procedure was dropped, renamed, or changed its signature or return type",
            "old code calls it by this signature: add the new function (or overload) alongside, switch "
            "the code, and drop the old one in a later deploy",
        ),
        Rule(
            "BRK011",
            "dropped-constraint",
            BREAKING,
            "a primary key, unique, exclusion or foreign key constraint, or a unique index, was dropped",
            "code relies on it (INSERT ... ON CONFLICT needs the unique key; ON DELETE CASCADE; "
            "integrity): drop it only once no running version depends on it",
        ),
        Rule(
            "BRK012",
            "dropped-default",
            BREAKING,
            "a NOT NULL column lost its default",
            "old code that omits the column on INSERT will fail: keep the default until every running "
            "version sets the column",
        ),
        Rule(
            "LCK001",
            "index-without-concurrently",
            LOCK_HEAVY,
            "an index was built on a pre-existing table without CONCURRENTLY",
            "CREATE INDEX blocks writes to the table for the whole build: use CREATE INDEX CONCURRENTLY "
            "outside a transaction (alembic: postgresql_concurrently=True inside "
            "op.get_context().autocommit_block())",
        ),
        Rule(
            "LCK002",
            "table-rewrite",
            LOCK_HEAVY,
            "a pre-existing table was rewritten or re-created (new relfilenode)",
            "the rewrite holds an ACCESS EXCLUSIVE lock for as long as it copies the table (ALTER COLUMN "
            "TYPE, a volatile DEFAULT, SET LOGGED, VACUUM FULL, CLUSTER, TRUNCATE, drop and re-create): "
            "use a new column and a batched backfill, or a maintenance window",
        ),
        Rule(
            "LCK003",
            "constraint-validated-under-lock",
            LOCK_HEAVY,
            "a validated constraint was added to (or re-created on) a pre-existing table",
            "ADD CONSTRAINT scans the table while blocking writes: add CHECK/FOREIGN KEY constraints "
            "NOT VALID and VALIDATE CONSTRAINT separately; for UNIQUE/PRIMARY KEY, CREATE UNIQUE INDEX "
            "CONCURRENTLY then ADD CONSTRAINT ... USING INDEX. Old code must already satisfy it",
        ),
        Rule("SAFE001", "added-table", SAFE, "a table was added", "safe: old code does not know about it"),
        Rule(
            "SAFE002",
            "added-column",
            SAFE,
            "a nullable column, or one with a default, was added",
            "safe: old INSERTs that omit it still work",
        ),
        Rule("SAFE003", "added-index", SAFE, "an index was added on a new table, or built CONCURRENTLY", "safe"),
        Rule(
            "SAFE004",
            "widened-type",
            SAFE,
            "a column type was widened (longer varchar, varchar to text, more numeric precision)",
            "safe: every old value still fits; the change needs no rewrite",
        ),
        Rule(
            "SAFE005",
            "added-enum-value",
            SAFE,
            "an enum gained values",
            "safe for old code; new code must not write the value until the deploy is complete",
        ),
        Rule("SAFE006", "added-object", SAFE, "a view, function or type was added", "safe"),
        Rule(
            "SAFE007",
            "changed-definition",
            SAFE,
            "a view's query or a function's body changed (same name, columns and signature), or a "
            "constraint's definition changed on a table that was itself re-created",
            "safe for callers; check the new behaviour is what old code expects",
        ),
        Rule(
            "SAFE008",
            "relaxed",
            SAFE,
            "a restriction was lifted: DROP NOT NULL, a dropped CHECK or non-unique index, a dropped trigger function",
            "safe for old code; a dropped index can make its queries slower",
        ),
        Rule(
            "SAFE009",
            "added-constraint-not-valid",
            SAFE,
            "a constraint was added NOT VALID, or from an index that already existed",
            "safe: VALIDATE CONSTRAINT later takes only a weak lock",
        ),
        Rule("SAFE010", "default-changed", SAFE, "a column's default was added or changed", "safe"),
        Rule(
            "SAFE011",
            "renamed-index-or-constraint",
            SAFE,
            "an index or constraint was renamed",
            "safe, unless code names it (INSERT ... ON CONFLICT ON CONSTRAINT name)",
        ),
        # Data checks: what the real app database's rows say about a change (docs/rehearsal.md).
        Rule(
            "DATA001",
            "nulls-block-not-null",
            BREAKING,
            "rows hold NULL in a column that becomes NOT NULL: SET NOT NULL will fail",
            "backfill the NULLs first (in batches), or add CHECK (col IS NOT NULL) NOT VALID, fix the rows, "
            "VALIDATE CONSTRAINT, and only then SET NOT NULL",
        ),
        Rule(
            "DATA002",
            "rows-block-not-null-column",
            BREAKING,
            "a NOT NULL column without a default is added to a table that has rows: ADD COLUMN will fail",
            "add the column with a DEFAULT (or nullable), backfill, and add NOT NULL in a later deploy",
        ),
        Rule(
            "DATA003",
            "duplicates-block-unique",
            BREAKING,
            "rows hold duplicate keys (or NULL in a primary key) for a new unique index or constraint",
            "remove the duplicates first; then CREATE UNIQUE INDEX CONCURRENTLY and ADD CONSTRAINT ... USING INDEX",
        ),
        Rule(
            "DATA004",
            "rows-violate-check",
            BREAKING,
            "rows violate a new CHECK constraint",
            "fix the rows first, or ADD CONSTRAINT ... NOT VALID (new rows are checked), fix the old rows, "
            "then VALIDATE CONSTRAINT",
        ),
        Rule(
            "DATA005",
            "rows-violate-foreign-key",
            BREAKING,
            "rows reference keys that the referenced table does not have (new FOREIGN KEY)",
            "fix or delete the orphan rows first, or ADD CONSTRAINT ... NOT VALID, fix them, then VALIDATE CONSTRAINT",
        ),
        Rule(
            "DATA006",
            "values-do-not-fit",
            BREAKING,
            "values do not fit a narrowed type (shorter varchar/char, less numeric precision, smaller integer)",
            "shorten or move the values first, or keep the wider type; a narrowing ALTER TYPE also rewrites the table",
        ),
        Rule(
            "DATA007",
            "enum-value-in-use",
            BREAKING,
            "rows hold an enum value the migration removes",
            "move the rows to another value (and stop writing it) first; remove the value in a later deploy",
        ),
        Rule(
            "DATA008",
            "large-table-locked",
            LOCK_HEAVY,
            "a large table is rewritten or scanned under a lock that blocks writes",
            "writes wait for the whole rewrite or scan: add a new column and backfill in batches, use NOT "
            "VALID then VALIDATE CONSTRAINT, or plan a maintenance window",
        ),
        Rule(
            "DATA009",
            "large-index-build",
            LOCK_HEAVY,
            "an index is built without CONCURRENTLY on a large table",
            "CREATE INDEX blocks writes for the whole build: use CREATE INDEX CONCURRENTLY outside a transaction",
        ),
        Rule(
            "DATA010",
            "data-check-unknown",
            UNKNOWN,
            "a data check could not finish (timed out, permission denied, locked, an object the migration creates)",
            "check by hand, or raise --data-check-timeout / grant SELECT to the role and rehearse again",
        ),
        Rule(
            "DATA011",
            "none-in-sample",
            UNKNOWN,
            "no violating row in a sample of a large table; the rest was not examined",
            "the full table may still hold violating rows: check by hand before relying on it",
        ),
        Rule(
            "DATA012",
            "no-violating-rows",
            SAFE,
            "every row was checked and none violates the change",
            "rows written between the check and the deploy can still violate it",
        ),
        Rule("DATA013", "table-size", SAFE, "the table the change locks is below the large-table threshold", "—"),
    )
}


class Ruled:
    """What a change and a data finding share: a rule id, and through it name, severity, hint."""

    rule: str

    @property
    def spec(self) -> Rule:
        return RULES[self.rule]

    @property
    def severity(self) -> str:
        return self.spec.severity


@dataclass(frozen=True)
class Change(Ruled):
    """One classified difference between the catalogs before and after the commands."""

    rule: str
    object: str
    detail: str
    group: str  # what the text output groups by: "table public.orders", "type public.mood", ...
    table: str | None = None


class Named(Protocol):
    """A change or a data finding: anything with a rule and an object."""

    @property
    def rule(self) -> str: ...

    @property
    def object(self) -> str: ...


def breaking_summary(changes: Iterable[Named], limit: int = 5) -> str:
    items = [f"{c.rule} {c.object}" for c in changes]
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more
