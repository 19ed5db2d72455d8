"""Tag rules, event-tag rules, segment descriptions and the audience sweep's recheck schedule.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from lifeloop.store.schema import Id, UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def _workspace_fk() -> sa.Column:
    return sa.Column("workspace_id", Id, sa.ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False)


def upgrade() -> None:
    op.create_table(
        "tag_rules",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        _workspace_fk(),
        sa.Column("tag", sa.String(128), nullable=False),
        sa.Column("condition", sa.Text(), nullable=False),
        sa.Column("description", sa.Text()),
        sa.Column("emit_on_add", sa.String(255)),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.UniqueConstraint("workspace_id", "tag", name="uq_tag_rules_workspace_id_tag"),
    )
    op.create_table(
        "event_tag_rules",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        _workspace_fk(),
        sa.Column("event", sa.String(255), nullable=False),
        sa.Column("property", sa.String(255), nullable=False),
        sa.Column("prefix", sa.String(64), nullable=False),
        sa.Column("ttl", sa.String(16)),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.UniqueConstraint(
            "workspace_id",
            "event",
            "property",
            "prefix",
            name="uq_event_tag_rules_workspace_id_event_property_prefix",
        ),
    )
    op.create_table(
        "audience_rechecks",
        _workspace_fk(),
        sa.Column("profile_id", Id, nullable=False),
        sa.Column("recheck_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("workspace_id", "profile_id", name="pk_audience_rechecks"),
    )
    op.create_index(
        "ix_audience_rechecks_workspace_id_recheck_at", "audience_rechecks", ["workspace_id", "recheck_at"]
    )
    with op.batch_alter_table("segments") as batch:
        batch.add_column(sa.Column("description", sa.Text()))


def downgrade() -> None:
    with op.batch_alter_table("segments") as batch:
        batch.drop_column("description")
    op.drop_table("audience_rechecks")
    op.drop_table("event_tag_rules")
    op.drop_table("tag_rules")
