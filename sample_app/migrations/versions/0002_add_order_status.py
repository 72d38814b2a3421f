"""Add orders.status and an index on (customer_id, status).

Revision ID: 0002_add_order_status
Revises: 0001_create_tables
Create Date: 2025-01-13 09:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_add_order_status"
down_revision: str | Sequence[str] | None = "0001_create_tables"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # The server default fills the column for rows that already exist.
    op.add_column(
        "orders",
        sa.Column("status", sa.String(20), nullable=False, server_default="pending"),
    )
    op.create_check_constraint(
        "ck_orders_status_known",
        "orders",
        "status IN ('pending', 'paid', 'shipped', 'cancelled')",
    )
    op.create_index("ix_orders_customer_id_status", "orders", ["customer_id", "status"])


def downgrade() -> None:
    op.drop_index("ix_orders_customer_id_status", table_name="orders")
    op.drop_constraint("ck_orders_status_known", "orders", type_="check")
    op.drop_column("orders", "status")
