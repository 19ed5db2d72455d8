"""Tables of the outbox, its delivery attempts, per-channel consent and the workspace contact policy."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Table,
    UniqueConstraint,
)

from lifeloop.store.schema import Id, Json, UTCDateTime, metadata

# queued → sending → delivered; sending → failed (retry at next_attempt_at) → sending …; sending → dead;
# queued/deferred → suppressed (the contact policy said no); deferred waits for quiet hours, caps, STO.
OUTBOX_STATUSES = ("queued", "deferred", "sending", "delivered", "failed", "dead", "suppressed")
FINAL_STATUSES = ("delivered", "dead", "suppressed")
DUE_STATUSES = ("queued", "deferred", "failed")

outbox = Table(
    "outbox",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("workspace_id", Id, ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False),
    Column("profile_id", Id),  # NULL for a test message to a bare address
    Column("channel", String(32), nullable=False),
    Column("recipient", String(512)),  # NULL until resolved from the profile's identities at send time
    Column("template", String(200)),
    Column("content", Json, nullable=False),  # rendered body for ``channel``
    Column("fallback_content", Json),  # {channel: rendered body} for the policy's fallback channels
    Column("idempotency_key", String(255), nullable=False),
    Column("transactional", Boolean, nullable=False),
    Column("optimize_send_time", Boolean, nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", UTCDateTime, nullable=False),
    Column("claimed_by", String(100)),
    Column("claimed_until", UTCDateTime),  # the lease: past it, another worker may take the message over
    Column("last_error", String(1000)),  # why it is deferred, failed, dead or suppressed
    Column("provider_message_id", String(255)),
    Column("fallback_of", Id),  # the outbox id this message replaces on another channel
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("delivered_at", UTCDateTime),
    # One provider request for several messages (a LINE multicast), named before it is made: a retry
    # repeats exactly that request with the same retry key, so nobody in it gets the message twice.
    Column("delivery_group", String(64)),
    # What queued the message when that is a whole campaign ("broadcast:<id>"): its messages, fallbacks
    # included, are found through an index instead of by matching keys.
    Column("origin", String(64)),
    UniqueConstraint("workspace_id", "idempotency_key"),
    Index(None, "status", "next_attempt_at"),  # the claim query, across workspaces
    Index(None, "workspace_id", "profile_id", "status"),  # frequency caps
    Index(None, "workspace_id", "id"),  # listing deliveries
    Index(None, "delivery_group"),
    Index(None, "workspace_id", "origin"),
)

delivery_attempts = Table(
    "delivery_attempts",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("workspace_id", Id, ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False),
    Column("outbox_id", Id, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("worker_id", String(100), nullable=False),
    Column("channel", String(32), nullable=False),
    Column("status", String(16), nullable=False),  # a SendStatus value
    Column("provider_message_id", String(255)),
    Column("retry_after", Float),
    Column("reason", String(1000)),
    Column("started_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime, nullable=False),
    Index(None, "workspace_id", "outbox_id"),
)

CONSENT_STATUSES = ("subscribed", "unsubscribed")

consents = Table(
    "consents",
    metadata,
    Column("workspace_id", Id, ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False),
    Column("profile_id", Id, nullable=False),
    Column("channel", String(32), nullable=False),
    Column("status", String(16), nullable=False),
    Column("source", String(100), nullable=False),  # api, unsubscribe_link, line_unfollow, import…
    Column("updated_at", UTCDateTime, nullable=False),
    PrimaryKeyConstraint("workspace_id", "profile_id", "channel"),
)

contact_policies = Table(
    "contact_policies",
    metadata,
    Column("workspace_id", Id, ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False),
    Column("policy", Json, nullable=False),  # only what the operator changed; defaults fill the rest
    Column("updated_at", UTCDateTime, nullable=False),
    PrimaryKeyConstraint("workspace_id"),
)


@dataclass(slots=True)
class OutboxEntry:
    id: int
    workspace_id: int
    profile_id: int | None
    channel: str
    recipient: str | None
    template: str | None
    content: dict[str, Any]
    fallback_content: dict[str, Any] | None
    idempotency_key: str
    transactional: bool
    optimize_send_time: bool
    status: str
    attempts: int
    next_attempt_at: datetime
    claimed_by: str | None
    claimed_until: datetime | None
    last_error: str | None
    provider_message_id: str | None
    fallback_of: int | None
    created_at: datetime
    updated_at: datetime
    delivered_at: datetime | None
    delivery_group: str | None = None
    origin: str | None = None

    @classmethod
    def from_row(cls, row: Any) -> OutboxEntry:
        return cls(**{name: row._mapping[name] for name in cls.__slots__})
