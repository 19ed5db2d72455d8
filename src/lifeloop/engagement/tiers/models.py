"""Tables of tiers: the workspace's programme (ladder, review, member day), each member's tier, the
history of changes, and the member days already run."""

from __future__ import annotations

from sqlalchemy import (
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Table,
    UniqueConstraint,
)

from lifeloop.store.schema import Id, Json, UTCDateTime, metadata

tier_programs = Table(
    "tier_programs",
    metadata,
    Column("workspace_id", Id, ForeignKey("workspaces.id", ondelete="CASCADE"), primary_key=True),
    Column("config", Json, nullable=False),  # ladder, window, review, downgrade, member day (see config.py)
    Column("updated_at", UTCDateTime, nullable=False),
)

# A profile without a row holds the ladder's first tier (when that tier asks nothing).
tier_members = Table(
    "tier_members",
    metadata,
    Column("workspace_id", Id, ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False),
    Column("profile_id", Id, nullable=False),
    Column("tier", String(64), nullable=False),
    Column("since", UTCDateTime, nullable=False),  # when the member reached this tier
    Column("review_at", UTCDateTime, nullable=False),  # when the next review may lower it
    Column("updated_at", UTCDateTime, nullable=False),
    PrimaryKeyConstraint("workspace_id", "profile_id"),
    Index(None, "review_at"),  # the sweep's due reviews, across workspaces
)

tier_changes = Table(
    "tier_changes",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("workspace_id", Id, ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False),
    Column("profile_id", Id, nullable=False),
    Column("from_tier", String(64)),
    Column("to_tier", String(64), nullable=False),
    Column("direction", String(8), nullable=False),
    Column("reason", String(64), nullable=False),  # order, points, review, manual
    Column("key", String(255), nullable=False),  # what caused it: a change is made once per key
    Column("at", UTCDateTime, nullable=False),
    UniqueConstraint("workspace_id", "key"),
    CheckConstraint("direction IN ('up', 'down')", name="direction"),
    Index(None, "workspace_id", "profile_id", "at"),
)

member_days = Table(
    "member_days",
    metadata,
    Column("workspace_id", Id, ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False),
    Column("month", String(7), nullable=False),  # YYYY-MM in the workspace's time zone
    Column("coupons_issued", Integer, nullable=False),
    Column("done_at", UTCDateTime, nullable=False),
    PrimaryKeyConstraint("workspace_id", "month"),
)
