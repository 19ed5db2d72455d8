"""Channels and templates: channel configurations (encrypted credentials), message templates.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from lifeloop.store.schema import Id, Json, UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "channel_configs",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("workspace_id", Id, sa.ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("credentials", sa.Text, nullable=False),
        sa.Column("settings", Json, nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.UniqueConstraint(
            "workspace_id", "channel", "name", name="uq_channel_configs_workspace_id_channel_name"
        ),
    )
    op.create_table(
        "templates",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("workspace_id", Id, sa.ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False),
        sa.Column("key", sa.String(100), nullable=False),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("default_locale", sa.String(35), nullable=False),
        sa.Column("variants", Json, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.UniqueConstraint("workspace_id", "key", name="uq_templates_workspace_id_key"),
    )


def downgrade() -> None:
    op.drop_table("templates")
    op.drop_table("channel_configs")
