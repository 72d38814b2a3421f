"""Proving that the tool's own objects in a database are the ones it made (docs/security.md,
"The tool's own objects").

Other roles may create schemas and tables in the app database. A table named like ours
with a trigger, a rule, a row-level policy, a CHECK or default calling a function, or a view
in its place would run that code as the deploy role, often a superuser, the next time the
tool writes or reads it. So before any object of its own is used, it is verified here:

- owner: the connecting role, a superuser, or (when the connecting role is not a superuser)
  a role the connecting role is a member of. A superuser never trusts an object owned by a
  role with less power;
- kind: a plain table (`r`), its owned sequences plain sequences (`S`); never a view,
  foreign or partitioned table, or a partition;
- columns: exactly the expected names and types, every type from `pg_catalog`, no generated
  column;
- no trigger, no rule, no row-level security (flag or policy), no inheritance either way;
- constraints only primary keys, CHECKs and NOT NULLs; defaults, CHECKs and indexes that
  depend on nothing but the table itself and its own sequences (no function, operator,
  type or collation anybody created), and no expression or partial index.

Public interface (also for other tables of the tool, such as a lock lease table):

    verify_schema(conn, schema) -> bool
        True when the schema exists and is acceptable, False when it does not exist;
        raises PlantedObject (a DatabaseError, exit 3) otherwise.

    verify_owned_table(conn, schema, table, expected_columns) -> bool
        `expected_columns` is a sequence of (name, type) pairs, the type spelled as
        `pg_catalog.format_type` prints it ("bigint", "uuid", "text", "integer",
        "timestamp with time zone"), in column order. True when the table exists and is
        acceptable, False when no relation of that name exists; raises PlantedObject
        naming the object, its owner and the fix otherwise. The schema is verified first.

    unsafe_to_read(conn, schema, table, columns, *, kinds="r") -> str | None
        For tables other roles own (the DBOS system tables, a migration tool's version
        table): why reading `columns` could run code they wrote (a view, row-level security,
        child tables, a column type outside pg_catalog), "missing", or None when it cannot.

Every query here reads `pg_catalog` only and names it; the caller's session has
`search_path` pinned to `pg_catalog, pg_temp` (database.connect).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from dbos_migrate.errors import DatabaseError

FIX = (
    "drop it as a role you trust after looking at what it holds (it was not made by dbos-migrate), "
    "keep history in a schema of your own with --history-schema NAME, or run with --no-history"
)


class PlantedObject(DatabaseError):
    """An object where the tool keeps its own state is not one the tool made."""

    code = "untrusted_object"


def _owner_sql(col: str) -> str:
    """Two SQL expressions: the name of the role whose oid is `col`, and whether it holds no
    less power than the connecting role (the owner test, evaluated by the server)."""
    return f"""(SELECT o.rolname::text FROM pg_catalog.pg_roles o WHERE o.oid = {col}),
       (SELECT o.oid = me.oid OR o.rolsuper OR (NOT me.rolsuper AND pg_catalog.pg_has_role(me.oid, o.oid, 'MEMBER'))
          FROM pg_catalog.pg_roles o, pg_catalog.pg_roles me
         WHERE o.oid = {col} AND me.rolname = pg_catalog.current_user())"""


_KINDS = {
    "r": "table",
    "v": "view",
    "m": "materialized view",
    "f": "foreign table",
    "p": "partitioned table",
    "S": "sequence",
    "i": "index",
    "c": "composite type",
    "I": "partitioned index",
}


def _refuse(what: str, owner: str, problems: Sequence[str]) -> PlantedObject:
    return PlantedObject(
        f"{what} (owner {owner}) is not one dbos-migrate made: {'; '.join(problems)}; refusing to use it",
        FIX,
    )


def _schema_owner(conn: psycopg.Connection[Any], schema: str) -> tuple[str, bool] | None:
    row = conn.execute(
        f"SELECT {_owner_sql('n.nspowner')} FROM pg_catalog.pg_namespace n WHERE n.nspname = %s", (schema,)
    ).fetchone()
    return None if row is None else (str(row[0]), bool(row[1]))


def verify_schema(conn: psycopg.Connection[Any], schema: str) -> bool:
    """True: the schema exists and its owner is acceptable; False: it does not exist."""
    found = _schema_owner(conn, schema)
    if found is None:
        return False
    owner, ok = found
    if not ok:
        raise _refuse(f"schema {schema}", owner, ["its owner has less power than the connecting role"])
    return True


#: The table, its own sequences and what its defaults, constraints and indexes depend on, in
#: one statement: one round trip per verification (docs/architecture.md, "Start-up").
#: `rel` is the relation with every fact the checks need; `seq` the sequences owned by one of
#: its columns; the last column counts the dependencies of its defaults, constraints and
#: indexes on anything but the table itself, its own sequences and its own constraints (a
#: function, operator, type, collation...). Built-in objects are pinned and never appear in
#: pg_depend.
_TABLE = f"""
WITH rel AS (
SELECT c.oid, c.relkind::text AS kind, {_owner_sql("c.relowner")}, {_owner_sql("n.nspowner")}, c.relrowsecurity, c.relforcerowsecurity,
       c.relispartition,
       ARRAY(SELECT a.attname::text || ' ' || pg_catalog.format_type(a.atttypid, a.atttypmod)
               FROM pg_catalog.pg_attribute a
              WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum),
       (SELECT pg_catalog.count(*) FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
         WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
           AND (t.typnamespace <> 'pg_catalog'::pg_catalog.regnamespace OR a.attgenerated <> '')),
       (SELECT pg_catalog.count(*) FROM pg_catalog.pg_trigger g WHERE g.tgrelid = c.oid),
       (SELECT pg_catalog.count(*) FROM pg_catalog.pg_rewrite w WHERE w.ev_class = c.oid),
       (SELECT pg_catalog.count(*) FROM pg_catalog.pg_policy p WHERE p.polrelid = c.oid),
       (SELECT pg_catalog.count(*) FROM pg_catalog.pg_inherits i WHERE i.inhrelid = c.oid OR i.inhparent = c.oid),
       (SELECT pg_catalog.count(*) FROM pg_catalog.pg_constraint k
         WHERE k.conrelid = c.oid AND k.contype NOT IN ('p', 'c', 'n')),
       (SELECT pg_catalog.count(*) FROM pg_catalog.pg_index x
         WHERE x.indrelid = c.oid AND (x.indexprs IS NOT NULL OR x.indpred IS NOT NULL))
  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = %(schema)s AND c.relname = %(table)s
), seq (oid, name, owner, ok) AS (
SELECT s.oid, s.relname::text, {_owner_sql("s.relowner")}
  FROM rel, pg_catalog.pg_depend d JOIN pg_catalog.pg_class s ON s.oid = d.objid
 WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
   AND d.refobjid = rel.oid AND d.deptype IN ('a', 'i') AND s.relkind = 'S'
), mine AS (
    SELECT 'pg_catalog.pg_attrdef'::pg_catalog.regclass AS classid, d.oid FROM rel, pg_catalog.pg_attrdef d WHERE d.adrelid = rel.oid
    UNION ALL
    SELECT 'pg_catalog.pg_constraint'::pg_catalog.regclass, k.oid FROM rel, pg_catalog.pg_constraint k WHERE k.conrelid = rel.oid
    UNION ALL
    SELECT 'pg_catalog.pg_class'::pg_catalog.regclass, x.indexrelid FROM rel, pg_catalog.pg_index x WHERE x.indrelid = rel.oid
)
SELECT rel.*,
       ARRAY(SELECT seq.name FROM seq WHERE NOT seq.ok ORDER BY seq.name),
       ARRAY(SELECT seq.owner FROM seq WHERE NOT seq.ok ORDER BY seq.name),
       (SELECT pg_catalog.count(*) FROM pg_catalog.pg_depend d JOIN mine m ON m.classid = d.classid AND m.oid = d.objid
         WHERE NOT (d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
                    AND d.refobjid IN (SELECT rel.oid FROM rel UNION ALL SELECT seq.oid FROM seq))
           AND NOT (d.refclassid = 'pg_catalog.pg_constraint'::pg_catalog.regclass
                    AND d.refobjid IN (SELECT k.oid FROM rel, pg_catalog.pg_constraint k WHERE k.conrelid = rel.oid)))
  FROM rel
"""


def verify_owned_table(
    conn: psycopg.Connection[Any], schema: str, table: str, expected_columns: Sequence[tuple[str, str]]
) -> bool:
    """True: `schema.table` exists and is what the tool made; False: no relation of that name
    exists (nor, maybe, the schema). Raises PlantedObject otherwise (module docstring)."""
    row = conn.execute(_TABLE, {"schema": schema, "table": table}).fetchone()
    if row is None:
        verify_schema(conn, schema)
        return False
    (
        _oid,
        kind,
        owner,
        owner_ok,
        schema_owner,
        schema_ok,
        rls,
        force_rls,
        partition,
        columns,
        odd_columns,
        triggers,
        rules,
        policies,
        inherits,
        odd_constraints,
        odd_indexes,
        bad_sequences,
        bad_owners,
        foreign,
    ) = row
    what = f"{_KINDS.get(kind, 'relation')} {schema}.{table}"
    problems: list[str] = []
    if not owner_ok:
        problems.append("its owner has less power than the connecting role")
    if not schema_ok:
        problems.append(f"its schema {schema} is owned by {schema_owner}, who has less power")
    if kind != "r":
        problems.append(f"it is a {_KINDS.get(kind, kind)}, not a plain table")
    if partition:
        problems.append("it is a partition of another table")
    expected = [f"{name} {typ}" for name, typ in expected_columns]
    if list(columns) != expected:
        problems.append("its columns are not the expected ones")
    if odd_columns:
        problems.append(f"{odd_columns} column(s) of a type outside pg_catalog or generated")
    if kind == "v":
        rules -= 1  # a view's own _RETURN rule: it is a view, which is said already
    for count, name in (
        (triggers, "trigger"),
        (rules, "rule"),
        (policies, "row-level policy"),
        (inherits, "inheritance link"),
        (odd_constraints, "foreign key, unique or exclusion constraint"),
        (odd_indexes, "expression or partial index"),
    ):
        if count:
            problems.append(f"it has {count} {name}(s)")
    if rls or force_rls:
        problems.append("row-level security is enabled on it")
    for seq_name, seq_owner_name in zip(bad_sequences, bad_owners, strict=True):
        problems.append(f"its sequence {schema}.{seq_name} is owned by {seq_owner_name}")
    if foreign:
        problems.append(
            f"{foreign} of its defaults, constraints or indexes use objects other than its own "
            "(a function, operator, type or another table)"
        )
    if problems:
        raise _refuse(what, owner, problems)
    return True


# ---------------------------------------------------------------------------- tables others own

_READABLE = """
SELECT c.relkind::text, c.relrowsecurity,
       (SELECT pg_catalog.count(*) FROM pg_catalog.pg_inherits i WHERE i.inhparent = c.oid),
       ARRAY(SELECT a.attname::text FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
              WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attname = ANY(%s)
                AND t.typnamespace <> 'pg_catalog'::pg_catalog.regnamespace)
  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = %s AND c.relname = %s
"""


def unsafe_to_read(
    conn: psycopg.Connection[Any], schema: str, table: str, columns: Sequence[str], *, kinds: str = "r"
) -> str | None:
    """Why reading `columns` of a table that other roles own (the DBOS system tables, a
    migration tool's version table) could run code they wrote, or None when it cannot.

    Refused: a relation of another kind than `kinds` (a view runs its functions as the reader),
    row-level security enabled (a policy's expression runs as the reader), child tables, and
    a column of a type outside pg_catalog (its casts may be functions anybody wrote).
    A missing table is "missing".
    """
    row = conn.execute(_READABLE, (list(columns), schema, table)).fetchone()
    if row is None:
        return "missing"
    kind, rls, children, odd = row
    name = f"{schema}.{table}"
    if kind not in kinds:
        return f"{name} is a {_KINDS.get(kind, kind)}, not a table: not read"
    if rls:
        return f"{name} has row-level security enabled: not read"
    if children:
        return f"{name} has child tables: not read"
    if odd:
        return f"{name} has columns of types outside pg_catalog ({', '.join(odd)}): not read"
    return None
