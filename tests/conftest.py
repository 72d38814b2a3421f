"""Fixtures shared by the test suite: a PostgreSQL instance, throwaway clusters, app databases.

* `pg_url` (session): a superuser instance URL, from $DBOS_MIGRATE_TEST_DATABASE_URL, else a
  testcontainers PostgresContainer when a Docker engine answers, else a throwaway cluster from
  local binaries (password-authenticated with scram-sha-256, password full of `@:/%#?&=`).
  None available: skip, or fail under CI=true.
* `own_cluster` (function): a factory of throwaway clusters the test may restart, kill, or run
  with SSL; each is stopped and its directory deleted afterwards, whatever happened.
* `app_db` (function): a unique app database name, dropped afterwards with its `_dbos_sys`.
* `reachable_tmp` (function): a temp dir that the server's unprivileged user can traverse.
* `sqlalchemy20` (session): the bin dir of a venv with alembic on SQLAlchemy 2.0 and psycopg 3.
* `dbos_ts` (session): a directory whose node_modules holds the real @dbos-inc/dbos-sdk 4.x.
* `dbos_py` (session): the bin dir of a venv holding the real `dbos` 3.4.0 from the package
  index (not a copy of its code). Skips when the index cannot be reached; fails under CI=true.
* `dbos_py1`, `dbos_py2` (session): the same with the real `dbos` 1.14.0 and 2.31.1.
* `dbos_ts_line` (session): installs the real @dbos-inc/dbos-sdk of a line ("1.x", "2.x",
  "3.x") once per run and returns the directory whose node_modules holds it.

Helpers such as `run_cli` live in pgharness.py (`from pgharness import run_cli`).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import uuid
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings
from pgharness import (
    VENV_INSTALL_TIMEOUT,
    ClusterFactory,
    PgInstance,
    VenvUnavailable,
    check_connect,
    drop_database,
    find_instance,
    in_ci,
    make_venv,
    reachable_tmpdir,
    start_cluster,
)

from dbos_migrate.localpg import Cluster

# The mutation run (bench/mutation.py, docs/mutation.md) sets HYPOTHESIS_PROFILE=mutation: few,
# derandomized examples and no example database, so every mutant meets the same inputs.
settings.register_profile("mutation", max_examples=20, deadline=None, derandomize=True, database=None)
if os.environ.get("HYPOTHESIS_PROFILE"):
    settings.load_profile(os.environ["HYPOTHESIS_PROFILE"])


@pytest.fixture(scope="session")
def pg_instance() -> Iterator[PgInstance]:
    """The session's PostgreSQL instance (see the module docstring for where it comes from)."""
    instance, reasons = find_instance()
    if instance is None:
        message = "no PostgreSQL available for tests: " + "; ".join(reasons)
        if in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    try:
        try:
            check_connect(instance.url)
        except Exception as exc:
            pytest.fail(f"cannot connect to the test PostgreSQL {instance!r}: {exc}", pytrace=False)
        yield instance
    finally:
        instance.close()


@pytest.fixture(scope="session")
def pg_url(pg_instance: PgInstance) -> str:
    """A superuser instance URL (no database in the path), password percent-encoded."""
    return pg_instance.url


@pytest.fixture
def reachable_tmp() -> Iterator[Path]:
    """A temp dir (mode 0755 under the system temp dir) for data a server must reach; pytest's
    tmp_path is under a 0700 directory that the `postgres` user cannot enter when we are root."""
    path = reachable_tmpdir()
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def own_cluster() -> Iterator[ClusterFactory]:
    """A factory of started throwaway clusters: `own_cluster(**kwargs)` takes Cluster's keyword
    arguments (ssl=, extra_conf=, extra_hba=, password=, binaries=...) and returns it running on
    a free port. Every cluster made is removed (stop or kill, rm -rf) after the test."""
    made: list[tuple[Cluster, Path]] = []

    def factory(**kwargs: Any) -> Cluster:
        base = reachable_tmpdir("dbos-migrate-cluster-")
        try:
            cluster = start_cluster(base, **kwargs)
        except BaseException:
            shutil.rmtree(base, ignore_errors=True)
            raise
        made.append((cluster, base))
        return cluster

    try:
        yield factory
    finally:
        for cluster, base in reversed(made):
            try:
                cluster.remove()
            except Exception as exc:  # keep cleaning the others
                warnings.warn(f"could not remove {cluster!r}: {exc}", stacklevel=1)
            shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def app_db(pg_url: str) -> Iterator[str]:
    """A unique app database name (`t_<12 hex>`), not created; afterwards it and
    `<name>_dbos_sys` are dropped if they exist (sessions forcibly disconnected)."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield name
    for db in (name, f"{name}_dbos_sys"):
        try:
            drop_database(pg_url, db)
        except Exception as exc:
            warnings.warn(f"could not drop test database {db}: {exc}", stacklevel=1)


@contextmanager
def shared_by_workers(factory: pytest.TempPathFactory, name: str) -> Iterator[tuple[Path, bool]]:
    """A directory of this run that the xdist workers share: the first to ask builds it, the
    others wait on a lock and reuse it. Yields (path, ready); when not ready the caller builds
    it, and it becomes ready only if the build returned without raising."""
    base = factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # this run's directory, above every worker's own
    path = base / f"shared-{name}"
    with open(base / f"shared-{name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        ready = (path / ".ready").exists()
        if not ready:
            shutil.rmtree(path, ignore_errors=True)
            path.mkdir()
        yield path, ready
        (path / ".ready").touch()


#: The DBOS Python release the compatibility tests measure against.
DBOS_PY_VERSION = "3.4.0"


def shared_venv(factory: pytest.TempPathFactory, name: str, packages: list[str], what: str) -> Path:
    """bin/ of a venv with `packages`, built once per run (shared_by_workers). Skips when the
    package index cannot be reached; under CI=true that fails, naming `what` is needed."""
    try:
        with shared_by_workers(factory, name) as (path, ready):
            return path / "venv" / "bin" if ready else make_venv(path / "venv", packages)
    except VenvUnavailable as exc:
        if in_ci():
            pytest.fail(f"{what} is needed under CI=true: {exc}", pytrace=False)
        pytest.skip(f"the package index cannot be reached: {exc}")


@pytest.fixture(scope="session")
def dbos_py(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """bin/ of a venv with the real `dbos` package (and psycopg for the test apps)."""
    packages = [f"dbos=={DBOS_PY_VERSION}", "psycopg[binary]"]
    return shared_venv(tmp_path_factory, "dbos-py", packages, "the real dbos package")


#: The DBOS Python 2.x release the app-database shape is measured against.
DBOS_PY2_VERSION = "2.31.1"


@pytest.fixture(scope="session")
def dbos_py2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """bin/ of a venv with the real `dbos` 2.x (the generation with `database_url` and
    `@DBOS.transaction` in the app database)."""
    packages = [f"dbos=={DBOS_PY2_VERSION}", "psycopg[binary]"]
    return shared_venv(tmp_path_factory, "dbos-py2", packages, "the real dbos 2.x package")


#: The DBOS Python 1.x release the app-database shape is measured against.
DBOS_PY1_VERSION = "1.14.0"


@pytest.fixture(scope="session")
def dbos_py1(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """bin/ of a venv with the real `dbos` 1.x (`database_url` and `@DBOS.transaction`, as 2.x)."""
    packages = [f"dbos=={DBOS_PY1_VERSION}", "psycopg[binary]"]
    return shared_venv(tmp_path_factory, "dbos-py1", packages, "the real dbos 1.x package")


@pytest.fixture(scope="session")
def sqlalchemy20(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """bin/ of a venv with alembic on SQLAlchemy 2.0 (not 2.1) and psycopg 3 only: a URL that
    lost its `+psycopg` would make SQLAlchemy 2.0 import psycopg2 and fail."""
    packages = ["sqlalchemy>=2.0,<2.1", "alembic", "psycopg[binary]"]
    return shared_venv(tmp_path_factory, "sqlalchemy20", packages, "SQLAlchemy 2.0")


#: The TypeScript SDK line the compatibility tests measure against (`dbos schema` exists from 3.x).
DBOS_TS_REQUIREMENT = "@dbos-inc/dbos-sdk@4"


@pytest.fixture(scope="session")
def dbos_ts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory whose node_modules holds the real TypeScript SDK from the npm registry."""
    npm = shutil.which("npm")
    if npm is None:
        if in_ci():
            pytest.fail("npm is needed for the TypeScript compatibility tests under CI=true", pytrace=False)
        pytest.skip("npm is not installed")
    with shared_by_workers(tmp_path_factory, "dbos-ts") as (root, ready):
        if not ready:
            _npm_install(npm, root)
    return root


@pytest.fixture(scope="session")
def knex_pg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory whose node_modules holds knex and node-postgres from the npm registry."""
    npm = shutil.which("npm")
    if npm is None:
        if in_ci():
            pytest.fail("npm is needed for the knex tests under CI=true", pytrace=False)
        pytest.skip("npm is not installed")
    with shared_by_workers(tmp_path_factory, "knex-pg") as (root, ready):
        if not ready:
            _npm_install(npm, root, ("knex", "pg"))
    return root


#: The TypeScript SDK releases whose app shapes are measured, one per line without `dbos schema`
#: for the app database (docs/dbos-compatibility.md, "App shapes and the runtime role").
DBOS_TS_LINES = {"1.x": "1.30.13", "2.x": "2.10.24", "3.x": "3.5.8"}


@pytest.fixture(scope="session")
def dbos_ts_line(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """The directory whose node_modules holds @dbos-inc/dbos-sdk of a line ("1.x"), installed
    from the npm registry once per run and line. npm and node are required under CI=true."""
    npm, node = shutil.which("npm"), shutil.which("node")
    if npm is None or node is None:
        if in_ci():
            pytest.fail("npm and node are needed for the TypeScript shape tests under CI=true", pytrace=False)
        pytest.skip("npm or node is not installed")

    def install(line: str) -> Path:
        version = DBOS_TS_LINES[line]
        with shared_by_workers(tmp_path_factory, f"dbos-ts-{version}") as (root, ready):
            if not ready:
                _npm_install(npm, root, (f"@dbos-inc/dbos-sdk@{version}",))
        return root

    return install


def _npm_install(npm: str, root: Path, packages: tuple[str, ...] = (DBOS_TS_REQUIREMENT,)) -> None:
    import subprocess

    (root / "package.json").write_text('{"name": "ts-shop", "version": "1.0.0", "private": true}\n')
    env = dict(os.environ, npm_config_cache=str(root / ".npm-cache"), npm_config_update_notifier="false")
    result = subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--loglevel=error", *packages],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=VENV_INSTALL_TIMEOUT,
        check=False,
    )
    if result.returncode != 0:
        if in_ci():
            pytest.fail(f"npm install {' '.join(packages)} failed: {result.stderr[-800:]}", pytrace=False)
        pytest.skip(f"the npm registry cannot be reached: {result.stderr[-300:]}")
    shutil.rmtree(root / ".npm-cache", ignore_errors=True)
