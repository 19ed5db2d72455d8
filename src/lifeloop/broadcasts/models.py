"""Tables of broadcasts: the broadcast with its definition and progress, and its frozen audience."""

from __future__ import annotations

from sqlalchemy import (
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from lifeloop.store.schema import Id, Json, UTCDateTime, metadata

BROADCAST_STATUSES = ("draft", "scheduled", "sending", "sent", "cancelled")
HOLDOUT = "holdout"  # the variant name of users kept out of the send, to measure against

broadcasts = Table(
    "broadcasts",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("workspace_id", Id, ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False),
    Column("key", String(64), nullable=False),
    Column("name", String(200), nullable=False),
    Column("status", String(16), nullable=False),
    Column("definition", Json, nullable=False),  # audience, variants, holdout, schedule, conversion
    Column("send_at", UTCDateTime),  # scheduled: when the audience is taken and messages are queued
    Column("audience_size", Integer),  # recipients (holdout included), once the audience is taken
    Column("queued", Integer, nullable=False),  # recipients already given their message (or holdout)
    Column("cursor", Id),  # the last profile id whose message is queued: where a worker resumes
    Column("started_at", UTCDateTime),
    Column("finished_at", UTCDateTime),  # sent: every message settled; cancelled: when
    Column("note", Text),  # why it ended as it did, when that needs saying
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    UniqueConstraint("workspace_id", "key"),
    CheckConstraint("status IN ('draft', 'scheduled', 'sending', 'sent', 'cancelled')", name="status"),
    Index(None, "status", "send_at"),
)

broadcast_recipients = Table(
    "broadcast_recipients",
    metadata,
    Column("workspace_id", Id, ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False),
    Column("broadcast_id", Id, ForeignKey("broadcasts.id", ondelete="CASCADE"), primary_key=True),
    Column("profile_id", Id, primary_key=True),
    Column("variant", String(64), nullable=False),  # a variant key, or 'holdout'
)
