"""Sending histories and reading tags, memberships and emitted events back."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from lifeloop.audience.models import profile_tags, segment_members, segments
from lifeloop.events.messages import parse_message
from lifeloop.events.models import events
from lifeloop.events.service import ingest
from lifeloop.profiles.resolver import resolve_pending
from lifeloop.profiles.service import find_by_identity
from lifeloop.store.schema import utcnow
from lifeloop.workspaces.models import SourceKey
from tests.conftest import Brand

History = tuple[tuple[float, str, dict[str, Any]], ...]  # (days ago, event, properties)


def send(engine: sa.Engine, brand: Brand, user: str, history: History, base: datetime) -> None:
    raws = []
    for n, (days, name, props) in enumerate(history):
        raw: dict = {
            "userId": user,
            "messageId": f"{user}-{n}-{days}-{name}",
            "timestamp": (base - timedelta(days=days)).isoformat(),
        }
        if name == "Page Viewed":
            raw |= {"type": "page", "name": "page", "properties": props}
        else:
            raw |= {"type": "track", "event": name, "properties": props}
        raws.append(raw)
    key = SourceKey(workspace_id=brand.workspace_id, source_id=brand.source_id)
    ingest(engine, key, [parse_message(r, received_at=utcnow()) for r in raws])
    resolve_pending(engine)


def pid(engine: sa.Engine, brand: Brand, user: str) -> int:
    with engine.connect() as conn:
        return find_by_identity(conn, brand.workspace_id, "user_id", user)


def tags(engine: sa.Engine, brand: Brand, user: str) -> dict[str, tuple[str, datetime | None]]:
    """Every stored tag row of a user (expired or not): tag → (kind, expires_at)."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(profile_tags.c.tag, profile_tags.c.kind, profile_tags.c.expires_at).where(
                profile_tags.c.workspace_id == brand.workspace_id,
                profile_tags.c.profile_id == pid(engine, brand, user),
            )
        )
        return {r.tag: (r.kind, r.expires_at) for r in rows}


def members(engine: sa.Engine, brand: Brand, key: str) -> set[int]:
    with engine.connect() as conn:
        query = (
            sa.select(segment_members.c.profile_id)
            .select_from(segment_members.join(segments, segments.c.id == segment_members.c.segment_id))
            .where(
                segment_members.c.workspace_id == brand.workspace_id,
                segments.c.workspace_id == brand.workspace_id,
                segments.c.key == key,
            )
        )
        return set(conn.execute(query).scalars())


def emitted(engine: sa.Engine, brand: Brand, name: str, user: str | None = None) -> list[dict]:
    """Properties of the events called ``name`` lifeloop recorded (for one user), oldest first."""
    with engine.connect() as conn:
        query = sa.select(events.c.properties).where(
            events.c.workspace_id == brand.workspace_id, events.c.event == name
        )
        if user is not None:
            query = query.where(events.c.profile_id == pid(engine, brand, user))
        return [r[0] for r in conn.execute(query.order_by(events.c.id))]
