"""Tables of users, workspace memberships, console sessions and the audit log of operator actions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Column, ForeignKey, Index, String, Table

from lifeloop.store.schema import Id, Json, UTCDateTime, metadata

users = Table(
    "users",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("email", String(254), nullable=False, unique=True),  # stored lower-case
    Column("name", String(200), nullable=False),
    Column("password_hash", String(255), nullable=False),  # argon2id, with its parameters and salt
    Column("locale", String(16), nullable=False),
    Column("timezone", String(64)),  # the user's own, shown beside the workspace's
    Column("created_at", UTCDateTime, nullable=False),
    Column("disabled_at", UTCDateTime),
)

memberships = Table(
    "memberships",
    metadata,
    Column("workspace_id", Id, ForeignKey("workspaces.id", ondelete="CASCADE"), primary_key=True),
    Column("user_id", Id, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("role", String(16), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Index(None, "user_id"),
)

console_sessions = Table(
    "console_sessions",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    # Only a SHA-256 of the cookie's secret is kept, so a copy of the database opens no session.
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("user_id", Id, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("workspace_id", Id, ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False),
    Column("csrf_token", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Index(None, "user_id"),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("workspace_id", Id, ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False),
    Column("user_id", Id, ForeignKey("users.id", ondelete="SET NULL")),
    Column("action", String(64), nullable=False),  # "segment.create", "member.add", …
    Column("target", String(200), nullable=False),
    Column("detail", Json, nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Index(None, "workspace_id", "at"),
)

LOCALES = ("zh-TW", "zh-CN", "en")


@dataclass(frozen=True, slots=True)
class User:
    id: int
    email: str
    name: str
    locale: str
    timezone: str | None
    created_at: datetime
    disabled_at: datetime | None


@dataclass(frozen=True, slots=True)
class Member:
    user: User
    role: str


@dataclass(frozen=True, slots=True)
class ConsoleSession:
    """A signed-in user in one workspace, with the role they hold there."""

    id: int
    user: User
    workspace_id: int
    role: str
    csrf_token: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    user_email: str | None
    action: str
    target: str
    detail: dict[str, Any]
    at: datetime


# What each role may do in the console; the REST API checks the same roles on its tokens.
PERMISSIONS: dict[str, frozenset[str]] = {
    "viewer": frozenset({"read"}),
    "analyst": frozenset({"read", "analyse"}),  # analyse: run analytics, export lists
    "operator": frozenset({"read", "analyse", "edit", "send"}),
    "admin": frozenset({"read", "analyse", "edit", "send", "admin"}),  # admin: members, tokens, channels
}
