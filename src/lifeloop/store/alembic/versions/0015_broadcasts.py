"""Broadcasts: definitions with their progress, each broadcast's frozen audience with variants, and the
outbox's ``origin`` that names the broadcast a message belongs to.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from lifeloop.store.schema import Id, Json, UTCDateTime

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "broadcasts",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("workspace_id", Id, sa.ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("definition", Json, nullable=False),
        sa.Column("send_at", UTCDateTime()),
        sa.Column("audience_size", sa.Integer()),
        sa.Column("queued", sa.Integer(), nullable=False),
        sa.Column("cursor", Id),
        sa.Column("started_at", UTCDateTime()),
        sa.Column("finished_at", UTCDateTime()),
        sa.Column("note", sa.Text()),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("workspace_id", "key", name="uq_broadcasts_workspace_id_key"),
        sa.CheckConstraint(
            "status IN ('draft', 'scheduled', 'sending', 'sent', 'cancelled')", name="ck_broadcasts_status"
        ),
    )
    op.create_index("ix_broadcasts_status_send_at", "broadcasts", ["status", "send_at"])
    op.create_table(
        "broadcast_recipients",
        sa.Column("workspace_id", Id, sa.ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False),
        sa.Column("broadcast_id", Id, sa.ForeignKey("broadcasts.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("profile_id", Id, primary_key=True),
        sa.Column("variant", sa.String(64), nullable=False),
    )
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("origin", sa.String(64)))
    op.create_index("ix_outbox_workspace_id_origin", "outbox", ["workspace_id", "origin"])


def downgrade() -> None:
    op.drop_index("ix_outbox_workspace_id_origin", "outbox")
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("origin")
    op.drop_table("broadcast_recipients")
    op.drop_index("ix_broadcasts_status_send_at", "broadcasts")
    op.drop_table("broadcasts")
