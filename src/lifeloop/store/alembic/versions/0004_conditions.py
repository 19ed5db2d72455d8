"""Computed properties and the membership tables conditions read (tags, stages, segments).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from lifeloop.store.schema import Id, UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def _workspace() -> sa.Column:
    return sa.Column("workspace_id", Id, sa.ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False)


def upgrade() -> None:
    op.create_table(
        "computed_event_days",
        _workspace(),
        sa.Column("profile_id", Id, nullable=False),
        sa.Column("event", sa.String(255), nullable=False),
        sa.Column("day", sa.Integer, nullable=False),
        sa.Column("event_count", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("workspace_id", "profile_id", "event", "day", name="pk_computed_event_days"),
    )
    op.create_table(
        "computed_event_sums",
        _workspace(),
        sa.Column("profile_id", Id, nullable=False),
        sa.Column("event", sa.String(255), nullable=False),
        sa.Column("day", sa.Integer, nullable=False),
        sa.Column("property", sa.String(255), nullable=False),
        sa.Column("total", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint(
            "workspace_id", "profile_id", "event", "day", "property", name="pk_computed_event_sums"
        ),
    )
    op.create_table(
        "computed_event_times",
        _workspace(),
        sa.Column("profile_id", Id, nullable=False),
        sa.Column("event", sa.String(255), nullable=False),
        sa.Column("first_at", UTCDateTime, nullable=False),
        sa.Column("last_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("workspace_id", "profile_id", "event", name="pk_computed_event_times"),
    )
    op.create_table(
        "profile_tags",
        _workspace(),
        sa.Column("profile_id", Id, nullable=False),
        sa.Column("tag", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("added_at", UTCDateTime, nullable=False),
        sa.Column("expires_at", UTCDateTime),
        sa.PrimaryKeyConstraint("workspace_id", "profile_id", "tag", name="pk_profile_tags"),
        sa.CheckConstraint("kind IN ('rule', 'event', 'manual')", name="ck_profile_tags_kind"),
    )
    op.create_index("ix_profile_tags_workspace_id_tag", "profile_tags", ["workspace_id", "tag"])
    op.create_table(
        "segments",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        _workspace(),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("condition", sa.Text, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.UniqueConstraint("workspace_id", "key", name="uq_segments_workspace_id_key"),
    )
    op.create_table(
        "segment_members",
        _workspace(),
        sa.Column("segment_id", Id, sa.ForeignKey("segments.id", ondelete="CASCADE"), nullable=False),
        sa.Column("profile_id", Id, nullable=False),
        sa.Column("entered_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("workspace_id", "segment_id", "profile_id", name="pk_segment_members"),
    )
    op.create_index(
        "ix_segment_members_workspace_id_profile_id", "segment_members", ["workspace_id", "profile_id"]
    )
    op.create_table(
        "profile_stages",
        _workspace(),
        sa.Column("profile_id", Id, nullable=False),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("stage", sa.String(64), nullable=False),
        sa.Column("entered_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("workspace_id", "profile_id", "model", name="pk_profile_stages"),
    )
    op.create_index(
        "ix_profile_stages_workspace_id_model_stage", "profile_stages", ["workspace_id", "model", "stage"]
    )


def downgrade() -> None:
    for table in (
        "profile_stages",
        "segment_members",
        "segments",
        "profile_tags",
        "computed_event_times",
        "computed_event_sums",
        "computed_event_days",
    ):
        op.drop_table(table)
