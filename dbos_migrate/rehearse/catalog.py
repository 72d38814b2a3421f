"""Catalog snapshots: the user objects of a database, read the same way before and after.

What the differ compares. Objects are keyed by OID where a rename keeps the OID, so a
rename can be told from a drop and an add.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg

Conn = psycopg.Connection[Any]

#: Our own bookkeeping schema: never copied, never compared.
OWN_SCHEMA = "dbos_migrate"


def user_schemas(alias: str) -> str:
    """SQL: the namespace `alias` holds user objects (no pg_*, information_schema, ours)."""
    return f"{alias}.nspname NOT IN ('information_schema', '{OWN_SCHEMA}') AND left({alias}.nspname, 3) <> 'pg_'"


def not_extension_member(catalog: str, oid_expr: str) -> str:
    """SQL: the object is not part of an extension (extension objects are not the app's schema)."""
    return (
        f"NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend xd WHERE xd.classid = '{catalog}'::regclass "
        f"AND xd.objid = {oid_expr} AND xd.deptype = 'e')"
    )


@dataclass(frozen=True)
class Column:
    name: str
    attnum: int
    type: str
    notnull: bool
    default: str | None
    identity: str
    generated: str

    @property
    def has_default(self) -> bool:
        return self.default is not None or bool(self.identity) or bool(self.generated)


@dataclass(frozen=True)
class Table:
    oid: int
    schema: str
    name: str
    kind: str
    relfilenode: int
    columns: dict[str, Column]

    @property
    def qualname(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def shape(self) -> frozenset[tuple[str, str]]:
        return frozenset((c.name, c.type) for c in self.columns.values())


@dataclass(frozen=True)
class Constraint:
    oid: int
    table_oid: int
    name: str
    type: str  # p, u, x, f, c
    definition: str
    validated: bool
    index_oid: int
    columns: tuple[str, ...]


@dataclass(frozen=True)
class Index:
    oid: int
    schema: str
    name: str
    table_oid: int
    definition: str
    unique: bool
    valid: bool
    concurrently: bool  # see _concurrently_sql
    constraint_backed: bool
    columns: tuple[str, ...]


@dataclass(frozen=True)
class Enum:
    oid: int
    qualname: str
    labels: tuple[str, ...]


@dataclass(frozen=True)
class View:
    oid: int
    qualname: str
    kind: str  # v or m
    definition: str
    columns: tuple[str, ...]


@dataclass(frozen=True)
class Function:
    oid: int
    schema: str
    name: str
    args: str
    result: str
    kind: str  # f, p, a, w
    body: str  # a hash

    @property
    def key(self) -> str:
        return f"{self.schema}.{self.name}({self.args})"


@dataclass
class Snapshot:
    """What the diff compares: objects keyed by OID where a rename keeps the OID."""

    tables: dict[int, Table] = field(default_factory=dict)
    constraints: dict[int, Constraint] = field(default_factory=dict)
    indexes: dict[int, Index] = field(default_factory=dict)
    enums: dict[int, Enum] = field(default_factory=dict)
    views: dict[int, View] = field(default_factory=dict)
    functions: dict[int, Function] = field(default_factory=dict)

    def shape(self) -> dict[str, Any]:
        """The snapshot without OIDs and physical details: equal for two faithful copies."""
        tables = {oid: t.qualname for oid, t in self.tables.items()}
        return {
            "tables": {
                t.qualname: sorted(
                    (c.name, c.type, c.notnull, c.default, c.identity, c.generated) for c in t.columns.values()
                )
                for t in self.tables.values()
            },
            "constraints": sorted(
                (tables[c.table_oid], c.name, c.type, c.definition, c.validated) for c in self.constraints.values()
            ),
            "indexes": sorted((tables[i.table_oid], i.name, i.definition) for i in self.indexes.values()),
            "enums": sorted((e.qualname, e.labels) for e in self.enums.values()),
            "views": sorted((v.qualname, v.kind, v.definition, v.columns) for v in self.views.values()),
            "functions": sorted((f.key, f.result, f.kind, f.body) for f in self.functions.values()),
        }


# A CREATE INDEX CONCURRENTLY commits the pg_class row of the index first and flips
# pg_index.indisready/indisvalid in later transactions, so its pg_index row is younger
# than its pg_class row; a plain CREATE INDEX writes both in one transaction. (ALTER INDEX
# RENAME makes the pg_class row younger, so it never fakes a concurrent build; CLUSTER ON
# or REPLICA IDENTITY USING INDEX on a plain index in the same migration would.)
_CONCURRENTLY_SQL = "age(i.xmin) < age(ic.xmin)"


def snapshot(conn: Conn) -> Snapshot:
    """Read the user objects of the connected database (search_path is set to '' so that
    every type and expression is rendered schema-qualified, the same way each time)."""
    conn.execute("SET search_path = ''")
    snap = Snapshot()
    rows = conn.execute(
        f"""SELECT c.oid, n.nspname, c.relname, c.relkind::text, c.relfilenode
              FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind IN ('r', 'p') AND {user_schemas("n")}
               AND {not_extension_member("pg_class", "c.oid")}"""
    ).fetchall()
    columns = _columns(conn, [r[0] for r in rows])
    for oid, schema, name, kind, node in rows:
        snap.tables[oid] = Table(oid, schema, name, kind, node, {c.name: c for c in columns.get(oid, [])})
    table_oids = list(snap.tables)
    for row in conn.execute(
        """SELECT con.oid, con.conrelid, con.conname, con.contype::text, pg_catalog.pg_get_constraintdef(con.oid),
                  con.convalidated, con.conindid,
                  ARRAY(SELECT a.attname::text FROM pg_catalog.pg_attribute a
                         WHERE a.attrelid = con.conrelid AND a.attnum = ANY(con.conkey) ORDER BY a.attnum)
             FROM pg_catalog.pg_constraint con
            WHERE con.conrelid = ANY(%s::oid[]) AND con.contype IN ('p', 'u', 'x', 'f', 'c')""",
        (table_oids,),
    ).fetchall():
        oid, rel, name, kind, definition, validated, index_oid, cols = row
        snap.constraints[oid] = Constraint(oid, rel, name, kind, definition, validated, index_oid, tuple(cols))
    for row in conn.execute(
        f"""SELECT i.indexrelid, n.nspname, ic.relname, i.indrelid, pg_catalog.pg_get_indexdef(i.indexrelid),
                   i.indisunique, i.indisvalid, {_CONCURRENTLY_SQL},
                   EXISTS (SELECT 1 FROM pg_catalog.pg_constraint con WHERE con.conindid = i.indexrelid
                            AND con.conrelid = i.indrelid AND con.contype IN ('p', 'u', 'x')),
                   ARRAY(SELECT a.attname::text FROM pg_catalog.pg_attribute a
                          WHERE a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey::int2[]) ORDER BY a.attnum)
              FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
              JOIN pg_catalog.pg_namespace n ON n.oid = ic.relnamespace
             WHERE i.indrelid = ANY(%s::oid[])""",
        (table_oids,),
    ).fetchall():
        oid, schema, name, rel, definition, unique, valid, concurrently, backed, cols = row
        snap.indexes[oid] = Index(oid, schema, name, rel, definition, unique, valid, concurrently, backed, tuple(cols))
    for oid, schema, name, labels in conn.execute(
        f"""SELECT t.oid, n.nspname, t.typname,
                   ARRAY(SELECT e.enumlabel::text FROM pg_catalog.pg_enum e
                          WHERE e.enumtypid = t.oid ORDER BY e.enumsortorder)
              FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
             WHERE t.typtype = 'e' AND {user_schemas("n")} AND {not_extension_member("pg_type", "t.oid")}"""
    ).fetchall():
        snap.enums[oid] = Enum(oid, f"{schema}.{name}", tuple(labels))
    views = conn.execute(
        f"""SELECT c.oid, n.nspname, c.relname, c.relkind::text, pg_catalog.pg_get_viewdef(c.oid)
              FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind IN ('v', 'm') AND {user_schemas("n")}
               AND {not_extension_member("pg_class", "c.oid")}"""
    ).fetchall()
    view_columns = _columns(conn, [r[0] for r in views])
    for oid, schema, name, kind, definition in views:
        cols = tuple(c.name for c in view_columns.get(oid, []))
        snap.views[oid] = View(oid, f"{schema}.{name}", kind, definition or "", cols)
    for row in conn.execute(
        f"""SELECT p.oid, n.nspname, p.proname, pg_catalog.pg_get_function_identity_arguments(p.oid),
                   coalesce(pg_catalog.pg_get_function_result(p.oid), ''), p.prokind::text,
                   md5(CASE WHEN p.prokind IN ('f', 'p') THEN pg_catalog.pg_get_functiondef(p.oid)
                            ELSE coalesce(p.prosrc, '') END)
              FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
             WHERE {user_schemas("n")} AND {not_extension_member("pg_proc", "p.oid")}"""
    ).fetchall():
        snap.functions[row[0]] = Function(*row)
    return snap


def _columns(conn: Conn, oids: list[int]) -> dict[int, list[Column]]:
    out: dict[int, list[Column]] = {}
    if not oids:
        return out
    for relid, num, name, typ, notnull, default, identity, generated in conn.execute(
        """SELECT a.attrelid, a.attnum, a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod), a.attnotnull,
                  pg_catalog.pg_get_expr(d.adbin, d.adrelid), a.attidentity::text, a.attgenerated::text
             FROM pg_catalog.pg_attribute a
             LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
            WHERE a.attrelid = ANY(%s::oid[]) AND a.attnum > 0 AND NOT a.attisdropped
            ORDER BY a.attrelid, a.attnum""",
        (oids,),
    ).fetchall():
        out.setdefault(relid, []).append(Column(name, num, typ, notnull, default, identity, generated))
    return out
