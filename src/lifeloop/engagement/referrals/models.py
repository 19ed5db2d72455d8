"""Tables of referrals: the workspace's programme, each customer's invite code, and each referred
customer's referral (joined → completed on the first purchase, or rejected with a reason)."""

from __future__ import annotations

from sqlalchemy import (
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    String,
    Table,
    UniqueConstraint,
)

from lifeloop.store.schema import Id, Json, UTCDateTime, metadata

REFERRAL_STATUSES = ("joined", "completed", "rejected")

referral_programs = Table(
    "referral_programs",
    metadata,
    Column("workspace_id", Id, ForeignKey("workspaces.id", ondelete="CASCADE"), primary_key=True),
    Column("config", Json, nullable=False),  # landing URL, rewards of both sides (see config.py)
    Column("updated_at", UTCDateTime, nullable=False),
)

referral_codes = Table(
    "referral_codes",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("workspace_id", Id, ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False),
    Column("profile_id", Id, nullable=False),
    # Unique across workspaces: the public link /r/{code} names no workspace.
    Column("code", String(16), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("code"),
    UniqueConstraint("workspace_id", "profile_id"),
)

referrals = Table(
    "referrals",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("workspace_id", Id, ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False),
    Column("referee_id", Id, nullable=False),  # the new customer: referred once
    Column("referrer_id", Id, nullable=False),
    Column("code", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("reason", String(64)),  # why it was rejected
    Column("device_id", String(255)),  # the referee's device when joining
    Column("join_message_id", String(255), nullable=False),
    Column("order_message_id", String(255)),  # the first purchase
    Column("joined_at", UTCDateTime, nullable=False),
    Column("completed_at", UTCDateTime),
    Column("rejected_at", UTCDateTime),
    UniqueConstraint("workspace_id", "referee_id"),
    CheckConstraint("status IN ('joined', 'completed', 'rejected')", name="status"),
    Index(None, "workspace_id", "referrer_id", "status"),
    Index(None, "workspace_id", "status", "completed_at"),
)
