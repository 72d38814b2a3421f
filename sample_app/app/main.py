"""A minimal app on top of the schema the migrations create.

``python3 app/main.py`` prints each customer with their order count and
spending. The database URL comes from ``DBOS_DATABASE_URL``, as in the
migrations; it is never printed.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.pool import NullPool

URL_ENV_VAR = "DBOS_DATABASE_URL"

metadata = sa.MetaData()

# Mirrors the schema at migration head (0003_seed_demo_data).
customers = sa.Table(
    "customers",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("email", sa.Text, nullable=False, unique=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)
orders = sa.Table(
    "orders",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("customer_id", sa.Integer, sa.ForeignKey("customers.id"), nullable=False),
    sa.Column("amount_cents", sa.Integer, nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)


@dataclass(frozen=True)
class CustomerSummary:
    id: int
    name: str
    email: str
    order_count: int
    spent_cents: int  # Sum over orders that are not cancelled.


def database_url(raw: str) -> URL:
    """Parse a ``postgres[ql][+driver]://`` URL and switch it to psycopg 3."""
    url = make_url(raw)
    if url.get_backend_name() not in ("postgres", "postgresql"):
        raise ValueError(f"{URL_ENV_VAR} must be a PostgreSQL URL")
    return url.set(drivername="postgresql+psycopg")


def make_engine(raw_url: str) -> Engine:
    return sa.create_engine(database_url(raw_url), poolclass=NullPool)


def list_customers(engine: Engine) -> list[CustomerSummary]:
    """All customers, by id, with their order count and non-cancelled spending."""
    live_amount = sa.case((orders.c.status != "cancelled", orders.c.amount_cents), else_=0)
    query = (
        sa.select(
            customers.c.id,
            customers.c.name,
            customers.c.email,
            sa.func.count(orders.c.id).label("order_count"),
            sa.func.coalesce(sa.func.sum(live_amount), 0).label("spent_cents"),
        )
        .select_from(customers.outerjoin(orders, orders.c.customer_id == customers.c.id))
        .group_by(customers.c.id)
        .order_by(customers.c.id)
    )
    with engine.connect() as conn:
        return [
            CustomerSummary(
                id=row.id,
                name=row.name,
                email=row.email,
                order_count=row.order_count,
                spent_cents=int(row.spent_cents),
            )
            for row in conn.execute(query)
        ]


def main() -> int:
    raw_url = os.environ.get(URL_ENV_VAR)
    if not raw_url:
        print(f"{URL_ENV_VAR} is not set", file=sys.stderr)
        return 2
    engine = make_engine(raw_url)
    try:
        for c in list_customers(engine):
            print(
                f"{c.id:>4}  {c.name:<20} {c.email:<24} {c.order_count:>3} orders  ${c.spent_cents / 100:,.2f}"
            )
    finally:
        engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
