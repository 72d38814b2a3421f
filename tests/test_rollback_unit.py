"""Pure parts of the recovery path: the URL the commands get (settings/target.py) and the
rollback comparison (rehearse/rollback.py). No database."""

from __future__ import annotations

from pathlib import Path

from dbos_migrate.rehearse.catalog import Column, Constraint, Snapshot, Table
from dbos_migrate.settings.target import command_env, resolve

SECRET = "p@ss:w/o%r#d?&=x"
ENCODED = "p%40ss%3Aw%2Fo%25r%23d%3F%26%3Dx"


def commands_env(url: str, environ: dict[str, str]) -> dict[str, str]:
    target = resolve(None, db_url=url, app_db_name="shop", environ=environ)
    env, _ = command_env(target, environ, None)
    return env


def test_the_masked_cloud_url_carries_the_password_from_pgpassword() -> None:
    env = commands_env(
        "postgresql+psycopg://u:***@db.example.com:5432/postgres?sslmode=require", {"PGPASSWORD": SECRET}
    )
    assert env["DBOS_DATABASE_URL"] == f"postgresql+psycopg://u:{ENCODED}@db.example.com:5432/shop?sslmode=require"
    assert (
        env["DBOS_SYSTEM_DATABASE_URL"]
        == f"postgresql+psycopg://u:{ENCODED}@db.example.com:5432/shop_dbos_sys?sslmode=require"
    )
    assert env["PGPASSWORD"] == SECRET


def test_a_url_without_password_gets_the_one_from_a_password_file(tmp_path: Path) -> None:
    passfile = tmp_path / "pgpass"
    passfile.write_text("db.example.com:5432:*:u:s3cret\n")
    passfile.chmod(0o600)
    env = commands_env("postgresql://u@db.example.com:5432/postgres", {"PGPASSFILE": str(passfile)})
    assert env["DBOS_DATABASE_URL"] == "postgresql://u:s3cret@db.example.com:5432/shop"


def test_a_masked_query_password_is_replaced_in_the_query() -> None:
    env = commands_env("postgresql://db.example.com/postgres?user=u&password=***", {"PGPASSWORD": "pw"})
    assert env["DBOS_DATABASE_URL"] == "postgresql://db.example.com/shop?user=u&password=pw"


def test_a_url_with_its_own_password_is_left_as_written() -> None:
    env = commands_env("postgresql://u:own@db.example.com/postgres", {"PGPASSWORD": "other"})
    assert env["DBOS_DATABASE_URL"] == "postgresql://u:own@db.example.com/shop"


# ---------------------------------------------------------------------------- compare


def table(oid: int, name: str, *columns: tuple[str, str]) -> Table:
    cols = {n: Column(n, i, t, False, None, "", "") for i, (n, t) in enumerate(columns, 1)}
    return Table(oid, "public", name, "r", oid, cols)


def snap(*tables: Table, constraints: tuple[Constraint, ...] = ()) -> Snapshot:
    return Snapshot(tables={t.oid: t for t in tables}, constraints={c.oid: c for c in constraints})


def found(before: Snapshot, after: Snapshot) -> list[tuple[str, str, str]]:
    from dbos_migrate.rehearse.rollback import compare

    return [(d.object, d.kind, d.issue) for d in compare(before, after)]


def test_a_restored_schema_has_no_difference_even_with_new_oids() -> None:
    assert found(snap(table(1, "t", ("id", "integer"))), snap(table(9, "t", ("id", "integer")))) == []


def test_left_over_missing_and_changed() -> None:
    before = snap(table(1, "t", ("id", "integer"), ("gone", "text")), table(2, "old", ("x", "integer")))
    after = snap(table(1, "t", ("id", "bigint"), ("c", "integer")), table(3, "new", ("x", "integer")))
    assert found(before, after) == [
        ("public.old", "table", "missing"),
        ("public.new", "table", "left over"),
        ("public.t.gone", "column", "missing"),
        ("public.t.c", "column", "left over"),
        ("public.t.id", "column", "changed"),
    ]


def test_constraints_count_on_tables_present_on_both_sides_only() -> None:
    check = Constraint(50, 1, "t_check", "c", "CHECK (id > 0)", True, 0, ("id",))
    on_new = Constraint(51, 3, "u_check", "c", "CHECK (x > 0)", True, 0, ("x",))
    before = snap(table(1, "t", ("id", "integer")))
    after = snap(table(1, "t", ("id", "integer")), table(3, "u", ("x", "integer")), constraints=(check, on_new))
    assert found(before, after) == [("public.u", "table", "left over"), ("public.t.t_check", "constraint", "left over")]


def test_version_tables_are_not_compared() -> None:
    assert found(snap(), snap(table(1, "alembic_version", ("version_num", "character varying(32)")))) == []
