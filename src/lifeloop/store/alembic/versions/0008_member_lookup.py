"""Segment memberships looked up by profile from a covering index.

The (workspace, profile) index did not hold the segment, so SQLite (without statistics) preferred to
walk the primary key — every member of the workspace — to find a few profiles' segments; with the
segment in the index the lookup is a seek.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-23
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_segment_members_workspace_id_profile_id_segment_id",
        "segment_members",
        ["workspace_id", "profile_id", "segment_id"],
    )
    op.drop_index("ix_segment_members_workspace_id_profile_id", table_name="segment_members")


def downgrade() -> None:
    op.create_index(
        "ix_segment_members_workspace_id_profile_id", "segment_members", ["workspace_id", "profile_id"]
    )
    op.drop_index("ix_segment_members_workspace_id_profile_id_segment_id", table_name="segment_members")
