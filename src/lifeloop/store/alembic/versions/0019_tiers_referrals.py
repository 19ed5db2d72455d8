"""Member tiers and referrals.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from lifeloop.store.schema import Id, Json, UTCDateTime

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def _workspace(primary_key: bool = False) -> sa.Column:
    return sa.Column(
        "workspace_id",
        Id,
        sa.ForeignKey("workspaces.id", ondelete="CASCADE"),
        nullable=False,
        primary_key=primary_key,
    )


def upgrade() -> None:
    op.create_table(
        "tier_programs",
        _workspace(primary_key=True),
        sa.Column("config", Json, nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "tier_members",
        _workspace(),
        sa.Column("profile_id", Id, nullable=False),
        sa.Column("tier", sa.String(64), nullable=False),
        sa.Column("since", UTCDateTime(), nullable=False),
        sa.Column("review_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("workspace_id", "profile_id", name="pk_tier_members"),
    )
    op.create_index("ix_tier_members_review_at", "tier_members", ["review_at"])
    op.create_table(
        "tier_changes",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        _workspace(),
        sa.Column("profile_id", Id, nullable=False),
        sa.Column("from_tier", sa.String(64)),
        sa.Column("to_tier", sa.String(64), nullable=False),
        sa.Column("direction", sa.String(8), nullable=False),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("workspace_id", "key", name="uq_tier_changes_workspace_id_key"),
        sa.CheckConstraint("direction IN ('up', 'down')", name="ck_tier_changes_direction"),
    )
    op.create_index(
        "ix_tier_changes_workspace_id_profile_id_at", "tier_changes", ["workspace_id", "profile_id", "at"]
    )
    op.create_table(
        "member_days",
        _workspace(),
        sa.Column("month", sa.String(7), nullable=False),
        sa.Column("coupons_issued", sa.Integer(), nullable=False),
        sa.Column("done_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("workspace_id", "month", name="pk_member_days"),
    )
    op.create_table(
        "referral_programs",
        _workspace(primary_key=True),
        sa.Column("config", Json, nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "referral_codes",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        _workspace(),
        sa.Column("profile_id", Id, nullable=False),
        sa.Column("code", sa.String(16), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("code", name="uq_referral_codes_code"),
        sa.UniqueConstraint("workspace_id", "profile_id", name="uq_referral_codes_workspace_id_profile_id"),
    )
    op.create_table(
        "referrals",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        _workspace(),
        sa.Column("referee_id", Id, nullable=False),
        sa.Column("referrer_id", Id, nullable=False),
        sa.Column("code", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(64)),
        sa.Column("device_id", sa.String(255)),
        sa.Column("join_message_id", sa.String(255), nullable=False),
        sa.Column("order_message_id", sa.String(255)),
        sa.Column("joined_at", UTCDateTime(), nullable=False),
        sa.Column("completed_at", UTCDateTime()),
        sa.Column("rejected_at", UTCDateTime()),
        sa.UniqueConstraint("workspace_id", "referee_id", name="uq_referrals_workspace_id_referee_id"),
        sa.CheckConstraint("status IN ('joined', 'completed', 'rejected')", name="ck_referrals_status"),
    )
    op.create_index(
        "ix_referrals_workspace_id_referrer_id_status", "referrals", ["workspace_id", "referrer_id", "status"]
    )
    op.create_index(
        "ix_referrals_workspace_id_status_completed_at",
        "referrals",
        ["workspace_id", "status", "completed_at"],
    )


def downgrade() -> None:
    for table in ("referrals", "referral_codes", "referral_programs", "member_days", "tier_changes"):
        op.drop_table(table)
    op.drop_index("ix_tier_members_review_at", table_name="tier_members")
    op.drop_table("tier_members")
    op.drop_table("tier_programs")
