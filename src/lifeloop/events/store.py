"""Reads and writes of the event log, for the other domains to call."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from lifeloop.events.messages import Message
from lifeloop.events.models import events


def existing_message_ids(conn: Connection, workspace_id: int, message_ids: Sequence[str]) -> set[str]:
    if not message_ids:
        return set()
    rows = conn.execute(
        select(events.c.message_id).where(
            events.c.workspace_id == workspace_id, events.c.message_id.in_(message_ids)
        )
    )
    return {r[0] for r in rows}


def event_row(workspace_id: int, source_id: int | None, msg: Message, profile_id: int) -> dict[str, Any]:
    return {
        "workspace_id": workspace_id,
        "source_id": source_id,
        "message_id": msg.message_id,
        "type": msg.type,
        "event": msg.event,
        "name": msg.name,
        "profile_id": profile_id,
        "user_id": msg.user_id,
        "anonymous_id": msg.anonymous_id,
        "group_id": msg.group_id,
        "previous_id": msg.previous_id,
        "timestamp": msg.timestamp,
        "original_timestamp": msg.original_timestamp,
        "sent_at": msg.sent_at,
        "received_at": msg.received_at,
        "properties": msg.properties,
        "traits": msg.traits,
        "context": msg.context,
        "integrations": msg.integrations,
        "extra": msg.extra,
    }


def insert_events(conn: Connection, rows: list[dict[str, Any]]) -> list[int]:
    """Insert event rows and return the new ids; a message id stored meanwhile (a retry) is skipped."""
    if not rows:
        return []
    dialect_insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    statement = (
        dialect_insert(events)
        .on_conflict_do_nothing(index_elements=["workspace_id", "message_id"])
        .returning(events.c.id)
    )
    return [r.id for r in conn.execute(statement, rows)]


def move_events(conn: Connection, workspace_id: int, *, from_profile: int, to_profile: int) -> int:
    """Re-point a merged profile's events to the profile it merged into; returns how many moved."""
    result = conn.execute(
        update(events)
        .where(events.c.workspace_id == workspace_id, events.c.profile_id == from_profile)
        .values(profile_id=to_profile)
    )
    return result.rowcount


def timeline(
    conn: Connection,
    workspace_id: int,
    profile_id: int,
    *,
    limit: int,
    before: tuple[datetime, int] | None = None,
    event_name: str | None = None,
) -> list[dict[str, Any]]:
    """A profile's events, newest first, keyset-paginated by (timestamp, id)."""
    query = select(events).where(events.c.workspace_id == workspace_id, events.c.profile_id == profile_id)
    if event_name is not None:
        query = query.where(events.c.event == event_name)
    if before is not None:
        ts, event_id = before
        query = query.where(
            or_(events.c.timestamp < ts, and_(events.c.timestamp == ts, events.c.id < event_id))
        )
    query = query.order_by(events.c.timestamp.desc(), events.c.id.desc()).limit(limit)
    return [dict(r._mapping) for r in conn.execute(query)]


def count_events(conn: Connection, workspace_id: int, profile_id: int | None = None) -> int:
    query = select(func.count()).select_from(events).where(events.c.workspace_id == workspace_id)
    if profile_id is not None:
        query = query.where(events.c.profile_id == profile_id)
    return int(conn.execute(query).scalar_one())
