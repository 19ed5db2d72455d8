"""The append-only event log."""

from __future__ import annotations

from sqlalchemy import Column, ForeignKey, Index, String, Table, UniqueConstraint, text

from lifeloop.store.schema import Id, Json, UTCDateTime, metadata

events = Table(
    "events",
    metadata,
    # Monotonic: the analytics sync reads "everything after id N".
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("workspace_id", Id, ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False),
    Column("source_id", Id, nullable=True),
    Column("message_id", String(255), nullable=False),
    Column("type", String(16), nullable=False),
    Column("event", String(255)),  # track: the event name
    Column("name", String(255)),  # page / screen: the page name
    # NULL until the resolver has placed the event on a profile (see profiles/resolver.py).
    Column("profile_id", Id),
    Column("user_id", String(255)),
    Column("anonymous_id", String(255)),
    Column("group_id", String(255)),
    Column("previous_id", String(255)),
    Column("timestamp", UTCDateTime, nullable=False),  # skew-corrected
    Column("original_timestamp", UTCDateTime),  # as the client said
    Column("sent_at", UTCDateTime),
    Column("received_at", UTCDateTime, nullable=False),
    Column("properties", Json),
    Column("traits", Json),
    Column("context", Json),
    Column("integrations", Json),
    Column("extra", Json),  # any other top-level field the client sent
    UniqueConstraint("workspace_id", "message_id"),
    Index(None, "workspace_id", "profile_id", "timestamp"),
    Index(
        "ix_events_unresolved",
        "workspace_id",
        "id",
        sqlite_where=text("profile_id IS NULL"),
        postgresql_where=text("profile_id IS NULL"),
    ),
)
