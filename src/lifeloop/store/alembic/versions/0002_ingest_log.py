"""Ingest commits raw events; identities are resolved afterwards, so an event may wait for its profile.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.alter_column("profile_id", existing_type=sa.BigInteger(), nullable=True)
    op.create_index(
        "ix_events_unresolved",
        "events",
        ["workspace_id", "id"],
        sqlite_where=sa.text("profile_id IS NULL"),
        postgresql_where=sa.text("profile_id IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_events_unresolved", "events")
    # Events still waiting for a profile cannot satisfy NOT NULL; they would be resolved on upgrade.
    op.get_bind().execute(
        sa.text("DELETE FROM events WHERE profile_id IS NULL").execution_options(cross_workspace=True)
    )
    with op.batch_alter_table("events") as batch:
        batch.alter_column("profile_id", existing_type=sa.BigInteger(), nullable=False)
