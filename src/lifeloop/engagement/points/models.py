"""Tables of points: each customer's account, the lots points are earned in, the ledger's entries and
which lots each spend or expiry took, daily check-ins, new-user task completions, and the workspace's
rules.

The ledger always balances, per customer: ``points_accounts.balance`` = Σ ``points_lots.remaining`` =
``earned`` − ``spent`` − ``expired``; a lot's ``points`` − ``remaining`` = Σ its allocations.
"""

from __future__ import annotations

from sqlalchemy import (
    CheckConstraint,
    Column,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    UniqueConstraint,
)

from lifeloop.store.schema import Id, Json, UTCDateTime, metadata

ENTRY_KINDS = ("earn", "spend", "expire")
CHECKIN_KINDS = ("daily", "makeup")

# One row per customer with points: the row that earn, spend and expire lock (SELECT … FOR UPDATE).
points_accounts = Table(
    "points_accounts",
    metadata,
    Column("workspace_id", Id, ForeignKey("workspaces.id", ondelete="CASCADE"), primary_key=True),
    Column("profile_id", Id, primary_key=True),
    Column("balance", Integer, nullable=False),
    Column("earned", Integer, nullable=False),
    Column("spent", Integer, nullable=False),
    Column("expired", Integer, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    CheckConstraint("balance >= 0", name="balance_not_negative"),
    CheckConstraint("balance = earned - spent - expired", name="balances"),
)

# Every change of a balance, with the key that makes it happen once.
points_entries = Table(
    "points_entries",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("workspace_id", Id, ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False),
    Column("profile_id", Id, nullable=False),
    Column("kind", String(8), nullable=False),
    Column("points", Integer, nullable=False),  # always positive; the kind says which way
    Column("balance_after", Integer, nullable=False),
    Column("key", String(255), nullable=False),
    Column("reason", String(200), nullable=False),
    Column("expires_at", UTCDateTime),  # earn: when the lot it made expires (None: never)
    Column("at", UTCDateTime, nullable=False),
    Column("ref", String(255)),  # what it is about, e.g. order:A-1, so a refund finds what the order earned
    UniqueConstraint("workspace_id", "key"),
    CheckConstraint("kind IN ('earn', 'spend', 'expire')", name="kind"),
    CheckConstraint("points > 0", name="points_positive"),
    Index(None, "workspace_id", "profile_id", "id"),
    Index(None, "workspace_id", "kind", "at"),
    Index(None, "workspace_id", "ref"),
)

# Points as they were earned, spent first-expiring-first (then oldest first).
points_lots = Table(
    "points_lots",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("workspace_id", Id, ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False),
    Column("profile_id", Id, nullable=False),
    Column("entry_id", Id, ForeignKey("points_entries.id", ondelete="CASCADE"), nullable=False),
    Column("points", Integer, nullable=False),
    Column("remaining", Integer, nullable=False),
    Column("earned_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime),
    CheckConstraint("remaining >= 0 AND remaining <= points", name="remaining_in_range"),
    Index(None, "workspace_id", "profile_id", "remaining"),
    Index(None, "expires_at", "remaining"),
)

# Which lots a spend or an expiry took points from, and how many.
points_allocations = Table(
    "points_allocations",
    metadata,
    Column("workspace_id", Id, ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False),
    Column("entry_id", Id, ForeignKey("points_entries.id", ondelete="CASCADE"), primary_key=True),
    Column("lot_id", Id, ForeignKey("points_lots.id", ondelete="CASCADE"), primary_key=True),
    Column("points", Integer, nullable=False),
    CheckConstraint("points > 0", name="points_positive"),
    Index(None, "lot_id"),
)

# One check-in per customer per day of the workspace's calendar.
checkins = Table(
    "checkins",
    metadata,
    Column("workspace_id", Id, ForeignKey("workspaces.id", ondelete="CASCADE"), primary_key=True),
    Column("profile_id", Id, primary_key=True),
    Column("day", Date, primary_key=True),
    Column("kind", String(8), nullable=False),
    Column("streak", Integer, nullable=False),  # consecutive days ending on this one
    Column("points", Integer, nullable=False),  # earned for it (daily points and streak bonus)
    Column("cost", Integer, nullable=False),  # paid for it (a make-up check-in)
    Column("key", String(255)),  # a make-up's idempotency key
    Column("at", UTCDateTime, nullable=False),
    UniqueConstraint("workspace_id", "key"),
    CheckConstraint("kind IN ('daily', 'makeup')", name="kind"),
)

# A new-user task, done once per customer.
points_task_completions = Table(
    "points_task_completions",
    metadata,
    Column("workspace_id", Id, ForeignKey("workspaces.id", ondelete="CASCADE"), primary_key=True),
    Column("profile_id", Id, primary_key=True),
    Column("task", String(32), primary_key=True),
    Column("points", Integer, nullable=False),
    Column("message_id", String(255), nullable=False),  # the event that did it
    Column("completed_at", UTCDateTime, nullable=False),
)

# The workspace's earn rules, check-in and new-user task settings (defaults when absent).
points_settings = Table(
    "points_settings",
    metadata,
    Column("workspace_id", Id, ForeignKey("workspaces.id", ondelete="CASCADE"), primary_key=True),
    Column("rules", Json, nullable=False),
    Column("checkin", Json, nullable=False),
    Column("tasks", Json, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)
