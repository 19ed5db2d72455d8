"""Tables of workspaces, sources and API tokens."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Column, ForeignKey, Index, String, Table, UniqueConstraint

from lifeloop.store.schema import Id, UTCDateTime, metadata

workspaces = Table(
    "workspaces",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("slug", String(64), nullable=False, unique=True),
    Column("name", String(200), nullable=False),
    Column("timezone", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

sources = Table(
    "sources",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("workspace_id", Id, ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(200), nullable=False),
    # Only a SHA-256 of the key is kept; the key itself is shown once, at creation.
    Column("write_key_hash", String(64), nullable=False, unique=True),
    Column("write_key_prefix", String(12), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("disabled_at", UTCDateTime),
    UniqueConstraint("workspace_id", "name"),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("workspace_id", Id, ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("role", String(16), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("token_prefix", String(12), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime),
    Index(None, "workspace_id"),
)

ROLES = ("admin", "operator", "analyst", "viewer")


@dataclass(frozen=True, slots=True)
class Workspace:
    id: int
    slug: str
    name: str
    timezone: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Source:
    id: int
    workspace_id: int
    name: str
    write_key_prefix: str
    created_at: datetime
    disabled_at: datetime | None


@dataclass(frozen=True, slots=True)
class ApiToken:
    id: int
    workspace_id: int
    name: str
    role: str
    token_prefix: str
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class SourceKey:
    """What a verified write key stands for."""

    workspace_id: int
    source_id: int


@dataclass(frozen=True, slots=True)
class TokenGrant:
    """What a verified API token stands for."""

    workspace_id: int
    token_id: int
    role: str
