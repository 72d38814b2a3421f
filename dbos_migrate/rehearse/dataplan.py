"""Which data checks each change needs: planned from the two snapshots and, for the new
indexes and constraints, from the scratch database's catalogs (their key expressions,
predicates and CHECK expressions, read while the scratch database still exists).

The checks themselves run on the real app database (datachecks.py). Tables and columns are
named as they are there: the snapshot taken before the commands ran has the real names.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from dbos_migrate.rehearse import exprsafe
from dbos_migrate.rehearse.catalog import Column, Constraint, Index, Snapshot, Table
from dbos_migrate.rehearse.rules import Change

#: What each kind of change needs, by rule (docs/rehearsal.md, "Data checks").
CHECKED_RULES = ("BRK005", "BRK006", "BRK007", "BRK008", "LCK001", "LCK002", "LCK003", "SAFE003")


@dataclass(frozen=True)
class Rel:
    """A table of the real app database."""

    schema: str
    name: str

    @property
    def qualname(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def ident(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.name)


@dataclass(frozen=True)
class RowCheck:
    """Do rows of `rel` violate what the change asks? Rows `violation` holds for are counted
    (or, for duplicates, rows sharing a key); `unknown` is set when it cannot be asked."""

    change: int
    kind: str  # nulls, rows, duplicates, check, foreign-key, fits-type, enum-values
    rule: str  # the DATA rule when violating rows are found
    object: str
    rel: Rel
    what: str  # what a violating row holds, e.g. "NULL in total"
    consequence: str  # e.g. "SET NOT NULL will fail"
    violation: sql.Composable | None = None
    keys: tuple[sql.Composable, ...] = ()
    where: sql.Composable | None = None
    null_key_violates: bool = False  # primary keys: a NULL key fails too
    nulls_distinct: bool = True
    unknown: str | None = None


@dataclass(frozen=True)
class SizeCheck:
    """How big is the table the change rewrites, scans or indexes under a write-blocking lock?"""

    change: int
    object: str
    rel: Rel
    operation: str  # rewrite, scan, index build
    lock: str
    rule: str  # DATA008 or DATA009 above the large-table threshold


Check = RowCheck | SizeCheck


@dataclass
class Details:
    """What the scratch database says about the new indexes and constraints, by OID."""

    indexes: dict[int, tuple[list[str], str | None, bool]] = field(default_factory=dict)
    checks: dict[int, str] = field(default_factory=dict)
    foreign_keys: dict[int, tuple[list[str], int, list[str], str]] = field(default_factory=dict)
    #: why an index's keys or predicate, or a CHECK, may not be evaluated on the app database
    unsafe_indexes: dict[int, str] = field(default_factory=dict)
    unsafe_checks: dict[int, str] = field(default_factory=dict)


def read_details(conn: psycopg.Connection[Any], index_oids: list[int], constraint_oids: list[int]) -> Details:
    """Key expressions, predicates and definitions, schema-qualified (search_path is empty)."""
    details = Details()
    conn.execute("SET search_path = ''")
    nulls = "i.indnullsnotdistinct" if conn.info.server_version >= 150000 else "false"
    if index_oids:
        trees: dict[int, list[str]] = {}
        for oid, keys, pred, not_distinct, trees_of in conn.execute(
            f"""SELECT i.indexrelid,
                       ARRAY(SELECT pg_catalog.pg_get_indexdef(i.indexrelid, k, false)
                               FROM generate_series(1, i.indnkeyatts) k ORDER BY k),
                       pg_catalog.pg_get_expr(i.indpred, i.indrelid, false), {nulls},
                       ARRAY[i.indexprs::pg_catalog.text, i.indpred::pg_catalog.text]
                  FROM pg_catalog.pg_index i WHERE i.indexrelid = ANY(%s::oid[])""",
            (index_oids,),
        ).fetchall():
            details.indexes[oid] = (list(keys), pred, bool(not_distinct))
            trees[oid] = [t for t in trees_of if t]
        details.unsafe_indexes = exprsafe.unsafe(conn, trees)
    if constraint_oids:
        checks: dict[int, list[str]] = {}
        for oid, kind, expr, tree, cols, ref, ref_cols, match in conn.execute(
            """SELECT con.oid, con.contype::text, pg_catalog.pg_get_expr(con.conbin, con.conrelid, false),
                      con.conbin::pg_catalog.text,
                      ARRAY(SELECT a.attname::text FROM unnest(con.conkey) WITH ORDINALITY k(n, o)
                              JOIN pg_catalog.pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.n
                             ORDER BY k.o),
                      con.confrelid,
                      ARRAY(SELECT a.attname::text FROM unnest(con.confkey) WITH ORDINALITY k(n, o)
                              JOIN pg_catalog.pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.n
                             ORDER BY k.o),
                      con.confmatchtype::text
                 FROM pg_catalog.pg_constraint con WHERE con.oid = ANY(%s::oid[])""",
            (constraint_oids,),
        ).fetchall():
            if kind == "c" and expr:
                details.checks[oid] = expr
                checks[oid] = [tree or "{UNREADABLE"]
            elif kind == "f":
                details.foreign_keys[oid] = (list(cols), ref, list(ref_cols), match)
        details.unsafe_checks = exprsafe.unsafe(conn, checks)
    return details


class Planner:
    """Plans the checks for a list of changes (pure once `details` is known)."""

    def __init__(self, changes: list[Change], before: Snapshot, after: Snapshot) -> None:
        self.changes = changes
        self.b = before
        self.a = after
        self._size_seen: set[tuple[str, str]] = set()

    # ------------------------------------------------------------------ what to read from the scratch

    def needed(self) -> tuple[list[int], list[int]]:
        """OIDs (in the scratch database) of the new indexes and constraints the checks need."""
        indexes: list[int] = []
        constraints: list[int] = []
        for change in self.changes:
            if change.rule in ("LCK001", "SAFE003"):
                idx = self._index(change)
                if idx is not None and idx.unique:
                    indexes.append(idx.oid)
            elif change.rule == "LCK003":
                con = self._constraint(change)
                if con is not None:
                    constraints.append(con.oid)
                    if con.type in "pu" and con.index_oid:
                        indexes.append(con.index_oid)
        return indexes, constraints

    # ------------------------------------------------------------------ the plan

    def plan(self, details: Details) -> list[Check]:
        checks: list[Check] = []
        for i, change in enumerate(self.changes):
            if change.rule in CHECKED_RULES:
                checks.extend(self._for(i, change, details))
        return checks

    def _for(self, i: int, change: Change, details: Details) -> Iterator[Check]:
        rule = change.rule
        if rule == "BRK008":
            yield from self._enum(i, change)
            return
        pair = self._tables(change)
        if pair is None:
            return  # a table the migration creates: no rows in the app database
        new, old = pair
        rel = Rel(old.schema, old.name)
        if rule == "LCK002":
            yield from self._size(i, change, rel, "rewrite", "ACCESS EXCLUSIVE")
        elif rule in ("BRK005", "BRK006"):
            yield from self._column(i, change, new, old, rel)
        elif rule == "BRK007":
            yield RowCheck(
                i,
                "rows",
                "DATA002",
                change.object,
                rel,
                "a row (the new column would be NULL)",
                "ADD COLUMN ... NOT NULL without a default will fail",
            )
        elif rule in ("LCK001", "SAFE003"):
            yield from self._new_index(i, change, rel, details)
        elif rule == "LCK003":
            yield from self._new_constraint(i, change, new, rel, details)

    def _column(self, i: int, change: Change, new: Table, old: Table, rel: Rel) -> Iterator[Check]:
        assert change.table is not None
        now = new.columns.get(change.object[len(change.table) + 1 :])
        was = _twin(old, now) if now is not None else None
        if now is None or was is None:
            return
        col = sql.SQL("t.{}").format(sql.Identifier(was.name))
        if change.rule == "BRK006":
            yield RowCheck(
                i,
                "nulls",
                "DATA001",
                change.object,
                rel,
                f"NULL in {was.name}",
                "SET NOT NULL will fail",
                violation=sql.SQL("{} IS NULL").format(col),
            )
            yield from self._size(i, change, rel, "scan", "ACCESS EXCLUSIVE")
            return
        narrowed = narrowing(was.type, now.type, col)
        if narrowed is not None:
            predicate, what = narrowed
            yield RowCheck(
                i,
                "fits-type",
                "DATA006",
                change.object,
                rel,
                f"{what} in {was.name}",
                f"ALTER TYPE {now.type} will fail",
                violation=predicate,
            )
        yield from self._size(i, change, rel, "rewrite", "ACCESS EXCLUSIVE")

    def _new_index(self, i: int, change: Change, rel: Rel, details: Details) -> Iterator[Check]:
        idx = self._index(change)
        if idx is None:
            return
        if idx.unique:
            yield self._duplicates(
                i,
                change,
                rel,
                idx.oid,
                details,
                primary=False,
                consequence=f"building unique index {idx.name} will fail",
            )
        if change.rule == "LCK001":
            yield from self._size(i, change, rel, "index build", "SHARE", rule="DATA009")

    def _new_constraint(self, i: int, change: Change, new: Table, rel: Rel, details: Details) -> Iterator[Check]:
        con = self._constraint(change)
        if con is None:
            return
        adding = f"adding constraint {con.name} will fail"
        if con.type in "pu":
            yield self._duplicates(i, change, rel, con.index_oid, details, primary=con.type == "p", consequence=adding)
            yield from self._size(i, change, rel, "index build", "ACCESS EXCLUSIVE")
        elif con.type == "c":
            expr = details.checks.get(con.oid)
            why = details.unsafe_checks.get(con.oid) if expr else "its expression could not be read"
            yield RowCheck(
                i,
                "check",
                "DATA004",
                change.object,
                rel,
                f"values failing CHECK {con.name}",
                adding,
                violation=sql.SQL("NOT ({})").format(sql.SQL(expr)) if expr and not why else None,
                unknown=why,
            )
            yield from self._size(i, change, rel, "scan", "ACCESS EXCLUSIVE")
        elif con.type == "f":
            yield self._foreign_key(i, change, con.oid, rel, details, adding)
            yield from self._size(i, change, rel, "scan", "SHARE ROW EXCLUSIVE")
        else:
            yield RowCheck(
                i,
                "exclusion",
                "DATA003",
                change.object,
                rel,
                "conflicting rows",
                adding,
                unknown="exclusion constraints are not checked",
            )
            yield from self._size(i, change, rel, "index build", "ACCESS EXCLUSIVE")

    def _duplicates(
        self, i: int, change: Change, rel: Rel, index_oid: int, details: Details, *, primary: bool, consequence: str
    ) -> RowCheck:
        found = details.indexes.get(index_oid)
        what = "duplicate keys" + (" or NULL keys" if primary else "")
        if found is None:
            return RowCheck(
                i,
                "duplicates",
                "DATA003",
                change.object,
                rel,
                what,
                consequence,
                unknown="its index could not be read from the scratch database",
            )
        keys, pred, not_distinct = found
        why = details.unsafe_indexes.get(index_oid)
        if why is not None:
            return RowCheck(i, "duplicates", "DATA003", change.object, rel, what, consequence, unknown=why)
        return RowCheck(
            i,
            "duplicates",
            "DATA003",
            change.object,
            rel,
            what,
            consequence,
            keys=tuple(sql.SQL("({})").format(sql.SQL(k)) for k in keys),
            where=sql.SQL(pred) if pred else None,
            null_key_violates=primary,
            nulls_distinct=not not_distinct,
        )

    def _foreign_key(self, i: int, change: Change, oid: int, rel: Rel, details: Details, adding: str) -> RowCheck:
        found = details.foreign_keys.get(oid)
        what = "keys the referenced table lacks"
        if found is None:
            return RowCheck(
                i,
                "foreign-key",
                "DATA005",
                change.object,
                rel,
                what,
                adding,
                unknown="its definition could not be read from the scratch database",
            )
        cols, ref_oid, ref_cols, match = found
        ref = self.b.tables.get(ref_oid)
        if ref is None:
            return RowCheck(
                i,
                "foreign-key",
                "DATA005",
                change.object,
                rel,
                what,
                adding,
                unknown="it references a table the migration creates, whose rows are not known",
            )
        mine = [sql.SQL("t.{}").format(sql.Identifier(c)) for c in cols]
        theirs = [sql.SQL("r.{}").format(sql.Identifier(c)) for c in ref_cols]
        equal = sql.SQL(" AND ").join(sql.SQL("{} = {}").format(b, a) for a, b in zip(mine, theirs, strict=True))
        missing = sql.SQL("NOT EXISTS (SELECT 1 FROM {} AS r WHERE {})").format(Rel(ref.schema, ref.name).ident, equal)
        all_set = sql.SQL(" AND ").join(sql.SQL("{} IS NOT NULL").format(c) for c in mine)
        violation = sql.SQL("({}) AND {}").format(all_set, missing)
        if match == "f" and len(mine) > 1:  # MATCH FULL: some but not all NULL fails too
            some_null = sql.SQL(" OR ").join(sql.SQL("{} IS NULL").format(c) for c in mine)
            violation = sql.SQL("({}) OR (({}) AND NOT ({}))").format(
                violation, some_null, sql.SQL(" AND ").join(sql.SQL("{} IS NULL").format(c) for c in mine)
            )
        return RowCheck(i, "foreign-key", "DATA005", change.object, rel, what, adding, violation=violation)

    def _enum(self, i: int, change: Change) -> Iterator[Check]:
        new = next((e for e in self.a.enums.values() if e.qualname == change.object), None)
        old = next((e for e in self.b.enums.values() if e.qualname == change.object), None)
        if new is None or old is None:
            return  # dropped or renamed: the values themselves are not removed from any row
        lost = [v for v in old.labels if v not in new.labels]
        if not lost:
            return
        shown = ", ".join(lost)
        for table in sorted(self.b.tables.values(), key=lambda t: t.qualname):
            for col in table.columns.values():
                if col.type not in (old.qualname, old.qualname + "[]"):
                    continue
                ref = sql.SQL("t.{}").format(sql.Identifier(col.name))
                values = sql.Literal(lost)
                violation = (
                    sql.SQL("{}::text[] && {}::text[]").format(ref, values)
                    if col.type.endswith("[]")
                    else sql.SQL("{}::text = ANY({}::text[])").format(ref, values)
                )
                yield RowCheck(
                    i,
                    "enum-values",
                    "DATA007",
                    f"{table.qualname}.{col.name}",
                    Rel(table.schema, table.name),
                    f"{shown} in {col.name}",
                    f"removing {shown} from {old.qualname} will fail or lose them",
                    violation=violation,
                )

    def _size(
        self, i: int, change: Change, rel: Rel, operation: str, lock: str, rule: str = "DATA008"
    ) -> Iterator[Check]:
        key = (rel.qualname, operation)
        if key not in self._size_seen:  # one size finding per table and operation (BRK005 + LCK002)
            self._size_seen.add(key)
            yield SizeCheck(i, change.table or rel.qualname, rel, operation, lock, rule)

    # ------------------------------------------------------------------ lookups

    def _tables(self, change: Change) -> tuple[Table, Table] | None:
        """(table after the commands, the same table in the app database), if it existed."""
        if change.table is None:
            return None
        new = next((t for t in self.a.tables.values() if t.qualname == change.table), None)
        if new is None:
            return None
        old = self.b.tables.get(new.oid)
        if old is None and change.rule == "LCK002":  # dropped and re-created under its name
            old = next((t for t in self.b.tables.values() if t.qualname == change.table), None)
        return (new, old) if old is not None else None

    def _index(self, change: Change) -> Index | None:
        idx = next((x for x in self.a.indexes.values() if f"{x.schema}.{x.name}" == change.object), None)
        if idx is None or idx.table_oid not in self.b.tables:
            return None  # an index on a table the migration creates
        return idx

    def _constraint(self, change: Change) -> Constraint | None:
        pair = self._tables(change)
        if pair is None or change.table is None:
            return None
        name = change.object[len(change.table) + 1 :]
        return next((c for c in self.a.constraints.values() if c.table_oid == pair[0].oid and c.name == name), None)


def _twin(old: Table, now: Column) -> Column | None:
    """The app database's column for `now`: same attnum (renames keep it), else same name."""
    return next((c for c in old.columns.values() if c.attnum == now.attnum), None) or old.columns.get(now.name)


_CHARS = re.compile(r"(character varying|character)\((\d+)\)")
_NUMERIC = re.compile(r"numeric\((\d+),(\d+)\)")
_INTS = {"smallint": (-(2**15), 2**15 - 1), "integer": (-(2**31), 2**31 - 1), "bigint": (-(2**63), 2**63 - 1)}


def narrowing(old: str, new: str, col: sql.Composable) -> tuple[sql.Composable, str] | None:
    """(predicate of a value that does not fit `new`, what it is), when `new` is narrower
    than `old` in a way rows can violate; None when every value fits or it is not known."""
    chars = _CHARS.fullmatch(new)
    if chars is not None:
        limit = int(chars[2])
        was = _CHARS.fullmatch(old)
        if old in ("text", "character varying") or (was is not None and int(was[2]) > limit):
            return sql.SQL("char_length({}) > {}").format(col, sql.Literal(limit)), f"values longer than {limit}"
        return None
    num = _NUMERIC.fullmatch(new)
    if num is not None and (old == "numeric" or _NUMERIC.fullmatch(old) or old in _INTS):
        precision, scale = int(num[1]), int(num[2])
        was_num = _NUMERIC.fullmatch(old)
        if was_num is not None and int(was_num[1]) - int(was_num[2]) <= precision - scale:
            return None  # as many integer digits as before: rounding, not overflow
        bound = sql.Literal(10 ** (precision - scale))
        predicate = sql.SQL("abs(round({}::numeric, {})) >= {}").format(col, sql.Literal(scale), bound)
        return predicate, f"values of {precision - scale} or more integer digits"
    if new in _INTS and old in _INTS and _INTS[new][1] < _INTS[old][1]:
        low, high = _INTS[new]
        predicate = sql.SQL("{} NOT BETWEEN {} AND {}").format(col, sql.Literal(low), sql.Literal(high))
        return predicate, f"values outside the {new} range"
    return None
