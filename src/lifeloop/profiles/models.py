"""Tables of profiles, identities and merges."""

from __future__ import annotations

from sqlalchemy import Column, ForeignKey, Index, Integer, PrimaryKeyConstraint, String, Table

from lifeloop.store.schema import Id, Json, UTCDateTime, metadata

profiles = Table(
    "profiles",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("workspace_id", Id, ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False),
    Column("user_id", String(255)),  # the first userId this profile was identified by
    Column("traits", Json, nullable=False),
    Column("timezone", String(64)),
    Column("locale", String(35)),
    Column("first_seen", UTCDateTime, nullable=False),
    Column("last_seen", UTCDateTime, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    # Set when this profile was merged into another; its events and identities moved there.
    Column("merged_into", Id),
    Index(None, "workspace_id", "user_id"),
    Index(None, "workspace_id", "last_seen"),
    Index(None, "workspace_id", "merged_into"),  # live profile ids (0009)
    Index(None, "workspace_id", "updated_at"),  # what changed since the analytics sync's watermark (0011)
)

identities = Table(
    "identities",
    metadata,
    Column("workspace_id", Id, ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("value", String(255), nullable=False),
    Column("profile_id", Id, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    PrimaryKeyConstraint("workspace_id", "kind", "value"),
    Index(None, "workspace_id", "profile_id"),
)

profile_merges = Table(
    "profile_merges",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("workspace_id", Id, ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False),
    Column("winner_id", Id, nullable=False),
    Column("loser_id", Id, nullable=False),
    Column("reason", String(64), nullable=False),
    Column("message_id", String(255)),
    Column("events_moved", Integer, nullable=False),
    Column("merged_at", UTCDateTime, nullable=False),
    Index(None, "workspace_id", "winner_id"),
    Index(None, "workspace_id", "loser_id"),
)

# Kinds of identity a profile can be reached by. Channel ids come from context.externalIds or traits.
IDENTITY_KINDS = (
    "user_id",
    "anonymous_id",
    "email",
    "phone",
    "line_user_id",
    "wecom_external_userid",
    "wechat_openid",
    "wechat_unionid",
)
