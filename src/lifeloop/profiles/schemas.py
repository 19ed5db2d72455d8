"""API shapes of profiles and their events."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel


class IdentityOut(BaseModel):
    kind: str
    value: str
    created_at: datetime


class MergeOut(BaseModel):
    profile_id: int
    reason: str
    message_id: str | None
    events_moved: int
    merged_at: datetime


class ProfileOut(BaseModel):
    id: int
    user_id: str | None
    traits: dict[str, Any]
    timezone: str | None
    locale: str | None
    first_seen: datetime
    last_seen: datetime
    created_at: datetime
    updated_at: datetime
    identities: list[IdentityOut]
    merged_from: list[MergeOut]
    event_count: int


class ProfileSummaryOut(BaseModel):
    id: int
    user_id: str | None
    traits: dict[str, Any]
    first_seen: datetime
    last_seen: datetime


class ProfilePage(BaseModel):
    items: list[ProfileSummaryOut]
    next_after: int | None


class EventOut(BaseModel):
    id: int
    message_id: str
    type: str
    event: str | None
    name: str | None
    user_id: str | None
    anonymous_id: str | None
    group_id: str | None
    previous_id: str | None
    timestamp: datetime
    original_timestamp: datetime | None
    sent_at: datetime | None
    received_at: datetime
    properties: dict[str, Any] | None
    traits: dict[str, Any] | None
    context: dict[str, Any] | None
    integrations: dict[str, Any] | None
    extra: dict[str, Any] | None


class EventPage(BaseModel):
    items: list[EventOut]
    next_cursor: str | None
