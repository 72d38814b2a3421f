"""Which of a change's expressions the data checks may evaluate on the real app database
(docs/rehearsal.md, "Which expressions are evaluated").

A CHECK expression, an index's key expressions or its predicate come from the change under
review. They are evaluated on the real database only when every function and operator in
them is built in (in `pg_catalog`, OID below 16384: created by initdb, not by anyone since)
and immutable (`provolatile = 'i'`), which rules out `pg_terminate_backend`, `pg_read_file`,
`set_config`, `nextval`, `dblink` and every user-defined function, whatever it claims to be.

How it is decided: from the scratch copy's catalog, by walking the stored expression tree
(`pg_constraint.conbin`, `pg_index.indexprs`, `pg_index.indpred`: PostgreSQL's node
strings) rather than `pg_depend`, which records no dependency on built-in objects. Every
node must be of a kind known to call nothing but its function or operator (a cast to a
domain, which runs the domain's own CHECKs, a `ROW` comparison, `current_user` and the
like are not), every `funcid`, `opno` and `opfuncid` is looked up, and an I/O conversion
or a GREATEST/LEAST (which call a type's own functions) only over built-in types. The SQL text run on the app database is printed by
`pg_get_expr` with `search_path` empty and run there with `search_path` empty, so a name it
resolves is a `pg_catalog` one.
"""

from __future__ import annotations

import re
from typing import Any

import psycopg

#: First OID not assigned by initdb (FirstNormalObjectId).
FIRST_USER_OID = 16384
#: Expression nodes that evaluate nothing but their own function or operator.
SAFE_NODES = frozenset(
    {
        "VAR",
        "CONST",
        "FUNCEXPR",
        "OPEXPR",
        "DISTINCTEXPR",
        "NULLIFEXPR",
        "SCALARARRAYOPEXPR",
        "BOOLEXPR",
        "NULLTEST",
        "BOOLEANTEST",
        "RELABELTYPE",
        "CASEEXPR",
        "CASEWHEN",
        "CASETESTEXPR",
        "COALESCEEXPR",
        "ARRAYEXPR",
        "COLLATEEXPR",
        "MINMAXEXPR",
        "COERCEVIAIO",
    }
)

_NODE = re.compile(r"\{([A-Z_]+)")
_FUNC = re.compile(r":(?:funcid|opfuncid|hashfuncid|negfuncid) (\d+)")
_OPER = re.compile(r":opno (\d+)")
_TYPE = re.compile(
    r":(?:vartype|consttype|resulttype|funcresulttype|opresulttype|minmaxtype|array_typeid|"
    r"element_typeid|casetype|coalescetype|collid|inputcollid|varcollid|constcollid) (\d+)"
)


def _strings(tree: str) -> str:
    """The node string without its quoted parts (a Const's bytes are numbers; names are not
    quoted in node strings, but be safe against `{` inside any string field)."""
    return re.sub(r'"(?:[^"\\]|\\.)*"', '""', tree)


def unsafe(conn: psycopg.Connection[Any], trees: dict[int, list[str]]) -> dict[int, str]:
    """For each key whose expression trees are not safe to evaluate on the app database, why."""
    parsed: dict[int, tuple[set[str], set[int], set[int], set[int]]] = {}
    funcs: set[int] = set()
    opers: set[int] = set()
    for key, texts in trees.items():
        nodes: set[str] = set()
        f: set[int] = set()
        o: set[int] = set()
        t: set[int] = set()
        for text in texts:
            tree = _strings(text)
            nodes |= set(_NODE.findall(tree))
            f |= {int(x) for x in _FUNC.findall(tree)} - {0}
            o |= {int(x) for x in _OPER.findall(tree)} - {0}
            t |= {int(x) for x in _TYPE.findall(tree)} - {0}
        parsed[key] = (nodes, f, o, t)
        funcs |= f
        opers |= o
    procs = _procs(conn, funcs, opers)
    out: dict[int, str] = {}
    for key, (nodes, f, o, t) in parsed.items():
        why = _why(nodes, f, o, t, procs)
        if why is not None:
            out[key] = why
    return out


def _procs(conn: psycopg.Connection[Any], funcs: set[int], opers: set[int]) -> dict[str, tuple[str, bool]]:
    """('f', oid) / ('o', oid) -> (qualified name, built in and immutable)."""
    found: dict[str, tuple[str, bool]] = {}
    if funcs:
        for oid, name, ok in conn.execute(
            """SELECT p.oid::pg_catalog.int8, n.nspname::pg_catalog.text || '.' || p.proname::pg_catalog.text,
                      p.oid < %s AND n.nspname = 'pg_catalog' AND p.provolatile = 'i'
                 FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
                WHERE p.oid = ANY(%s::pg_catalog.oid[])""",
            (FIRST_USER_OID, sorted(funcs)),
        ).fetchall():
            found[f"f{oid}"] = (name, bool(ok))
    if opers:
        for oid, name, ok in conn.execute(
            """SELECT o.oid::pg_catalog.int8, 'operator ' || n.nspname::pg_catalog.text || '.'
                          || o.oprname::pg_catalog.text || ' (' || p.proname::pg_catalog.text || ')',
                      o.oid < %s AND p.oid < %s AND n.nspname = 'pg_catalog' AND p.provolatile = 'i'
                 FROM pg_catalog.pg_operator o JOIN pg_catalog.pg_namespace n ON n.oid = o.oprnamespace
                 JOIN pg_catalog.pg_proc p ON p.oid = o.oprcode
                WHERE o.oid = ANY(%s::pg_catalog.oid[])""",
            (FIRST_USER_OID, FIRST_USER_OID, sorted(opers)),
        ).fetchall():
            found[f"o{oid}"] = (name, bool(ok))
    return found


def _why(
    nodes: set[str], funcs: set[int], opers: set[int], types: set[int], procs: dict[str, tuple[str, bool]]
) -> str | None:
    other = sorted(nodes - SAFE_NODES)
    if other:
        return (
            f"its expression uses {', '.join(n.lower() for n in other)}, which the data checks do not "
            "evaluate on the app database"
        )
    for kind, oids in (("f", funcs), ("o", opers)):
        for oid in sorted(oids):
            name, ok = procs.get(f"{kind}{oid}", (f"an unknown {'function' if kind == 'f' else 'operator'}", False))
            if not ok:
                return (
                    f"its expression calls {name}, which is not a built-in immutable function: it is not "
                    "evaluated on the app database"
                )
    if nodes & {"COERCEVIAIO", "MINMAXEXPR"} and any(t >= FIRST_USER_OID for t in types):
        return (
            "its expression converts or compares a type that is not built in (its functions are not "
            "built in): it is not evaluated"
        )
    return None
