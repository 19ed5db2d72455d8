"""Put profiles with events, tags, stages and segments straight into a workspace, and clear it again."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from lifeloop.audience.models import profile_tags, segment_members, segments
from lifeloop.events.models import events
from lifeloop.lifecycle.models import profile_stages
from lifeloop.profiles.computed import COMPUTED_TABLES, ResolvedEvent, apply_resolved_events
from lifeloop.profiles.models import profiles

_ids = itertools.count()
SEGMENT_KEYS = ("big", "small")


@dataclass
class Person:
    """One profile as test data: (type, event, timestamp, properties) events and memberships."""

    events: list[tuple[str, str | None, datetime, dict[str, Any] | None]] = field(default_factory=list)
    traits: dict[str, Any] = field(default_factory=dict)
    tags: dict[str, datetime | None] = field(default_factory=dict)
    stages: dict[str, str] = field(default_factory=dict)
    segments: frozenset[str] = frozenset()


def seed(conn: sa.Connection, workspace_id: int, people: list[Person], *, now: datetime) -> list[int]:
    """Store the people; the computed properties are maintained by ``apply_resolved_events``."""
    segment_ids = {}
    for key in SEGMENT_KEYS:
        segment_ids[key] = conn.execute(
            sa.insert(segments)
            .values(
                workspace_id=workspace_id, key=key, name=key, condition="true", created_at=now, updated_at=now
            )
            .returning(segments.c.id)
        ).scalar_one()
    ids = []
    for person in people:
        pid = conn.execute(
            sa.insert(profiles)
            .values(
                workspace_id=workspace_id,
                traits=person.traits,
                first_seen=now,
                last_seen=now,
                created_at=now,
                updated_at=now,
            )
            .returning(profiles.c.id)
        ).scalar_one()
        ids.append(pid)
        if person.events:
            conn.execute(
                sa.insert(events),
                [
                    {
                        "workspace_id": workspace_id,
                        "message_id": f"m{next(_ids)}",
                        "type": type_,
                        "event": name,
                        "profile_id": pid,
                        "timestamp": ts,
                        "received_at": ts,
                        "properties": props,
                    }
                    for type_, name, ts, props in person.events
                ],
            )
        apply_resolved_events(
            conn, workspace_id, [ResolvedEvent(pid, t, n, ts, p) for t, n, ts, p in person.events]
        )
        for tag, expires_at in person.tags.items():
            conn.execute(
                sa.insert(profile_tags).values(
                    workspace_id=workspace_id,
                    profile_id=pid,
                    tag=tag,
                    kind="rule",
                    added_at=now,
                    expires_at=expires_at,
                )
            )
        for model, stage in person.stages.items():
            conn.execute(
                sa.insert(profile_stages).values(
                    workspace_id=workspace_id, profile_id=pid, model=model, stage=stage, entered_at=now
                )
            )
        for key in person.segments:
            conn.execute(
                sa.insert(segment_members).values(
                    workspace_id=workspace_id, segment_id=segment_ids[key], profile_id=pid, entered_at=now
                )
            )
    return ids


def clear(conn: sa.Connection, workspace_id: int) -> None:
    for table in (
        *COMPUTED_TABLES,
        profile_tags,
        profile_stages,
        segment_members,
        segments,
        events,
        profiles,
    ):
        conn.execute(sa.delete(table).where(table.c.workspace_id == workspace_id))


def computed_state(conn: sa.Connection, workspace_id: int) -> dict[str, list[tuple[Any, ...]]]:
    """Every computed row of the workspace, sorted: equal states mean equal aggregates."""
    return {
        table.name: sorted(
            tuple(r) for r in conn.execute(sa.select(table).where(table.c.workspace_id == workspace_id))
        )
        for table in COMPUTED_TABLES
    }
