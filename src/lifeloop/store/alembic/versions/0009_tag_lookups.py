"""Tags found by expiry and by kind without reading every tag of the workspace.

Each recompute drops expired tags and rule tags whose rule is gone, and schedules rechecks at the
next expiry. Without these indexes each of those read every tag of the workspace (millions of event
tags in a large one); with them they read the expired, expiring or rule tags only. The expiry index
holds the profile, so the rechecks' read never visits the table.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-23
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_profile_tags_workspace_id_expires_at_profile_id",
        "profile_tags",
        ["workspace_id", "expires_at", "profile_id"],
    )
    op.create_index("ix_profile_tags_workspace_id_kind_tag", "profile_tags", ["workspace_id", "kind", "tag"])


def downgrade() -> None:
    op.drop_index("ix_profile_tags_workspace_id_kind_tag", table_name="profile_tags")
    op.drop_index("ix_profile_tags_workspace_id_expires_at_profile_id", table_name="profile_tags")
