"""Table of per-workspace channel configurations (credentials encrypted at rest)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Column, ForeignKey, String, Table, Text, UniqueConstraint

from lifeloop.store.schema import Id, Json, UTCDateTime, metadata

CHANNELS = ("line", "wecom", "wechat", "email", "sms", "webhook")

channel_configs = Table(
    "channel_configs",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("workspace_id", Id, ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False),
    Column("channel", String(32), nullable=False),
    Column("name", String(100), nullable=False),
    # AES-GCM ciphertext of the credentials JSON, bound to (workspace, channel, name); see config.py.
    Column("credentials", Text, nullable=False),
    Column("settings", Json, nullable=False),  # non-secret options: base URLs, sender, tracking flags
    Column("enabled", Boolean, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    UniqueConstraint("workspace_id", "channel", "name"),
)


@dataclass(frozen=True, slots=True)
class ChannelConfig:
    """A channel configuration as operators see it: settings, and which credential fields are set."""

    id: int
    workspace_id: int
    channel: str
    name: str
    settings: dict[str, Any]
    credential_fields: list[str]
    enabled: bool
    created_at: datetime
    updated_at: datetime
