"""Tables of tags and segments (memberships read by conditions)."""

from __future__ import annotations

from sqlalchemy import (
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from lifeloop.store.schema import Id, UTCDateTime, metadata

TAG_KINDS = ("rule", "event", "manual")

# One row per tag a profile holds now; a tag past ``expires_at`` no longer counts (has_tag is false).
profile_tags = Table(
    "profile_tags",
    metadata,
    Column("workspace_id", Id, ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False),
    Column("profile_id", Id, nullable=False),
    Column("tag", String(128), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("added_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime),
    PrimaryKeyConstraint("workspace_id", "profile_id", "tag"),
    CheckConstraint("kind IN ('rule', 'event', 'manual')", name="kind"),
    Index(None, "workspace_id", "tag"),
    Index(None, "workspace_id", "expires_at", "profile_id"),  # expired and expiring tags (0009)
    Index(None, "workspace_id", "kind", "tag"),  # rule tags (0009)
)

segments = Table(
    "segments",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("workspace_id", Id, ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False),
    Column("key", String(64), nullable=False),  # what in_segment("key") names
    Column("name", String(200), nullable=False),
    Column("condition", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("description", Text),  # added by migration 0007
    UniqueConstraint("workspace_id", "key"),
)

segment_members = Table(
    "segment_members",
    metadata,
    Column("workspace_id", Id, ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False),
    Column("segment_id", Id, ForeignKey("segments.id", ondelete="CASCADE"), nullable=False),
    Column("profile_id", Id, nullable=False),
    Column("entered_at", UTCDateTime, nullable=False),
    PrimaryKeyConstraint("workspace_id", "segment_id", "profile_id"),
    Index(None, "workspace_id", "profile_id", "segment_id"),  # a profile's segments: covering (0008)
)

# Rule tags: ``tag`` is held exactly while ``condition`` holds (kept current in real time, by the
# sweep and by recompute). ``emit_on_add`` names an extra event recorded when the tag is added
# (the wecom ``vip`` rule creates an advisor task this way).
tag_rules = Table(
    "tag_rules",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("workspace_id", Id, ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False),
    Column("tag", String(128), nullable=False),
    Column("condition", Text, nullable=False),
    Column("description", Text),
    Column("emit_on_add", String(255)),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    UniqueConstraint("workspace_id", "tag"),
)

# Event tags: each placed event named ``event`` whose property at ``property`` (dotted path) has a
# value tags its profile ``<prefix>:<value>``, for ``ttl`` (e.g. "30d") after the event or for good.
event_tag_rules = Table(
    "event_tag_rules",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("workspace_id", Id, ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False),
    Column("event", String(255), nullable=False),
    Column("property", String(255), nullable=False),
    Column("prefix", String(64), nullable=False),
    Column("ttl", String(16)),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("workspace_id", "event", "property", "prefix"),
)

# When a profile's tags or segments could next change with no new event (a time rule crossing its
# threshold, a tag expiring, a stage the sweep may move); the audience sweep reads only what is due.
audience_rechecks = Table(
    "audience_rechecks",
    metadata,
    Column("workspace_id", Id, ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False),
    Column("profile_id", Id, nullable=False),
    Column("recheck_at", UTCDateTime, nullable=False),
    PrimaryKeyConstraint("workspace_id", "profile_id"),
    Index(None, "workspace_id", "recheck_at", "profile_id"),  # covering (0009)
)
