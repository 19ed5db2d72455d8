"""Table of message templates and their locale variants."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Column, ForeignKey, Integer, String, Table, UniqueConstraint

from lifeloop.store.schema import Id, Json, UTCDateTime, metadata

templates = Table(
    "templates",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("workspace_id", Id, ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False),
    Column("key", String(100), nullable=False),
    Column("channel", String(32), nullable=False),
    Column("default_locale", String(35), nullable=False),
    # {locale: {field: Liquid source, or a JSON structure whose strings are Liquid (LINE Flex)}}
    Column("variants", Json, nullable=False),
    Column("version", Integer, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    UniqueConstraint("workspace_id", "key"),
)


@dataclass(frozen=True, slots=True)
class Template:
    id: int
    workspace_id: int
    key: str
    channel: str
    default_locale: str
    variants: dict[str, dict[str, Any]]
    version: int
    created_at: datetime
    updated_at: datetime
