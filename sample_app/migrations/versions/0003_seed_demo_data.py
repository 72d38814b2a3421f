"""Seed demo customers and orders, then mark the paid demo orders as shipped.

A data migration: it only touches rows whose customer email is one of
DEMO_EMAILS, so the downgrade can remove exactly what the upgrade added.

Revision ID: 0003_seed_demo_data
Revises: 0002_add_order_status
Create Date: 2025-01-20 09:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_seed_demo_data"
down_revision: str | Sequence[str] | None = "0002_add_order_status"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Lightweight table stubs: a migration must not import the app's current models.
customers = sa.table(
    "customers",
    sa.column("id", sa.Integer()),
    sa.column("name", sa.Text()),
    sa.column("email", sa.Text()),
)
orders = sa.table(
    "orders",
    sa.column("customer_id", sa.Integer()),
    sa.column("amount_cents", sa.Integer()),
    sa.column("status", sa.String(20)),
)

DEMO_CUSTOMERS: list[dict[str, str]] = [
    {"name": "Ada Lovelace", "email": "ada@example.com"},
    {"name": "Grace Hopper", "email": "grace@example.com"},
    {"name": "Edsger Dijkstra", "email": "edsger@example.com"},
]
DEMO_EMAILS = [c["email"] for c in DEMO_CUSTOMERS]

# (customer email, amount in cents, status)
DEMO_ORDERS: list[tuple[str, int, str]] = [
    ("ada@example.com", 1250, "paid"),
    ("ada@example.com", 4999, "pending"),
    ("grace@example.com", 300, "paid"),
    ("edsger@example.com", 10000, "cancelled"),
]


def upgrade() -> None:
    op.bulk_insert(customers, DEMO_CUSTOMERS)
    # Orders are linked by email, so this also works in offline (--sql) mode,
    # where generated customer ids are not known.
    for email, amount_cents, status in DEMO_ORDERS:
        op.execute(
            orders.insert().from_select(
                ["customer_id", "amount_cents", "status"],
                sa.select(customers.c.id, sa.literal(amount_cents), sa.literal(status)).where(
                    customers.c.email == email
                ),
            )
        )
    demo_customer_ids = sa.select(customers.c.id).where(customers.c.email.in_(DEMO_EMAILS))
    op.execute(
        orders.update()
        .where(orders.c.customer_id.in_(demo_customer_ids), orders.c.status == "paid")
        .values(status="shipped")
    )


def downgrade() -> None:
    # Deleting orders first keeps this independent of the FK's ON DELETE rule.
    demo_customer_ids = sa.select(customers.c.id).where(customers.c.email.in_(DEMO_EMAILS))
    op.execute(orders.delete().where(orders.c.customer_id.in_(demo_customer_ids)))
    op.execute(customers.delete().where(customers.c.email.in_(DEMO_EMAILS)))
