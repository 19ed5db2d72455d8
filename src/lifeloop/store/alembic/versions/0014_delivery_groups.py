"""Outbox delivery groups: the messages one provider request carried (a LINE multicast), recorded before
the request so a retry after a crash repeats exactly that request, under the same retry key.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("delivery_group", sa.String(64)))
    op.create_index("ix_outbox_delivery_group", "outbox", ["delivery_group"])


def downgrade() -> None:
    op.drop_index("ix_outbox_delivery_group", "outbox")
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("delivery_group")
