"""Alembic environment for the sample app.

The database URL comes from the ``DBOS_DATABASE_URL`` environment variable,
which ``dbos-migrate`` (like DBOS's ``dbos migrate``) sets for each migration
command. It is never printed.

The URL is deliberately not passed through ``config.set_main_option``: alembic
stores options in a ConfigParser, where ``%`` starts an interpolation, and a
percent-encoded password (``p%40ss``) would break it. The engine is built
straight from the parsed URL instead.
"""

from __future__ import annotations

import os
import sys
from logging.config import fileConfig
from typing import NoReturn

from alembic import context
from sqlalchemy import create_engine
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.pool import NullPool

URL_ENV_VAR = "DBOS_DATABASE_URL"
DRIVERNAME = "postgresql+psycopg"  # psycopg 3

config = context.config

if config.config_file_name is not None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)

# No autogenerate: revisions are written by hand.
target_metadata = None


def fail(message: str) -> NoReturn:
    """Stop alembic with a short message and a non-zero exit status."""
    sys.exit(f"migrations/env.py: {message}")


def database_url() -> URL:
    """Return ``DBOS_DATABASE_URL`` as a SQLAlchemy URL using psycopg 3.

    ``postgres://``, ``postgresql://`` and ``postgresql+<driver>://`` all
    become ``postgresql+psycopg://``. Percent-encoded credentials are decoded
    by SQLAlchemy's parser, and the query string (``sslmode=...``) is kept.
    """
    raw = os.environ.get(URL_ENV_VAR, "").strip()
    if not raw:
        fail(f"{URL_ENV_VAR} is not set; it must hold the app database URL (postgresql://...).")
    try:
        url: URL | None = make_url(raw)
    except (ArgumentError, ValueError):
        url = None  # Its message may quote the whole string, password included.
    if url is None:
        fail(f"{URL_ENV_VAR} is not a valid database URL.")
    if url.get_backend_name() not in ("postgres", "postgresql"):
        fail(f"{URL_ENV_VAR} must be a PostgreSQL URL, not {url.get_backend_name()!r}.")
    if not url.database:
        fail(f"{URL_ENV_VAR} names no database.")
    return url.set(drivername=DRIVERNAME)


def run_migrations_offline() -> None:
    """Emit the migration SQL to stdout (``alembic upgrade head --sql``)."""
    context.configure(
        url=database_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run the migrations against the database, in one transaction."""
    engine = create_engine(database_url(), poolclass=NullPool)
    try:
        with engine.connect() as connection:
            context.configure(connection=connection, target_metadata=target_metadata)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
