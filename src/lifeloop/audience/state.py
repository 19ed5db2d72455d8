"""Writing tags and memberships with the events that announce them, and reading them per profile."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, insert, select

from lifeloop.audience.definitions import Audience, expiry_after
from lifeloop.audience.models import profile_tags, segment_members, segments
from lifeloop.conditions.evaluator import lookup
from lifeloop.events import store as event_store
from lifeloop.events.messages import Message
from lifeloop.events.models import events
from lifeloop.profiles import computed
from lifeloop.profiles.computed import event_name

TAG_ADDED, TAG_REMOVED = "Tag Added", "Tag Removed"
SEGMENT_ENTERED, SEGMENT_EXITED = "Segment Entered", "Segment Exited"


@dataclass
class TagState:
    kind: str
    expires_at: datetime | None

    def holds(self, now: datetime) -> bool:
        return self.expires_at is None or self.expires_at > now


@dataclass(frozen=True, slots=True)
class Change:
    profile_id: int
    kind: str  # "tag" or "segment"
    key: str
    action: str  # added, removed, entered, exited
    reason: str


# --- writing and emitting -----------------------------------------------------------------------
class Emits:
    """Events lifeloop records on profiles, written together at the end of a pass (one insert, one
    placement and one computed-property update instead of three statements per event)."""

    def __init__(self) -> None:
        self.pending: list[tuple[int, Message]] = []

    def add(self, profile_id: int, name: str, properties: dict, at: datetime) -> None:
        mid = f"audience:{uuid.uuid4().hex}"
        message = Message(
            type="track", message_id=mid, timestamp=at, received_at=at, event=name, properties=properties
        )
        self.pending.append((profile_id, message))

    def flush(self, conn: Connection, workspace_id: int) -> None:
        if not self.pending:
            return
        pending, self.pending = self.pending, []
        for start in range(0, len(pending), 1000):  # bounded IN lists
            chunk = pending[start : start + 1000]
            event_store.append_events(conn, workspace_id, None, [m for _, m in chunk])
            owner = {m.message_id: pid for pid, m in chunk}
            rows = conn.execute(
                select(events.c.id, events.c.message_id).where(
                    events.c.workspace_id == workspace_id, events.c.message_id.in_(list(owner))
                )
            )
            event_store.place_events(conn, workspace_id, [(r.id, owner[r.message_id]) for r in rows])
        computed.apply_resolved_events(
            conn,
            workspace_id,
            [computed.ResolvedEvent(pid, "track", m.event, m.timestamp, m.properties) for pid, m in pending],
        )


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def put_tag(
    conn: Connection,
    workspace_id: int,
    profile_id: int,
    tag: str,
    state: TagState,
    *,
    now: datetime,
    reason: str,
    announce: bool,
    emits: Emits,
    also_emit: str | None = None,
) -> None:
    conn.execute(
        delete(profile_tags).where(
            profile_tags.c.workspace_id == workspace_id,
            profile_tags.c.profile_id == profile_id,
            profile_tags.c.tag == tag,
        )
    )
    conn.execute(
        insert(profile_tags).values(
            workspace_id=workspace_id,
            profile_id=profile_id,
            tag=tag,
            kind=state.kind,
            added_at=now,
            expires_at=state.expires_at,
        )
    )
    if announce:
        props = {"tag": tag, "kind": state.kind, "reason": reason, "expires_at": _iso(state.expires_at)}
        emits.add(profile_id, TAG_ADDED, props, now)
        if also_emit:
            emits.add(profile_id, also_emit, props, now)


def drop_tag(
    conn: Connection,
    workspace_id: int,
    profile_id: int,
    tag: str,
    kind: str,
    *,
    now: datetime,
    reason: str,
    emits: Emits,
) -> None:
    conn.execute(
        delete(profile_tags).where(
            profile_tags.c.workspace_id == workspace_id,
            profile_tags.c.profile_id == profile_id,
            profile_tags.c.tag == tag,
        )
    )
    emits.add(profile_id, TAG_REMOVED, {"tag": tag, "kind": kind, "reason": reason}, now)


def set_membership(
    conn: Connection,
    workspace_id: int,
    profile_id: int,
    segment_id: int,
    key: str,
    member: bool,
    *,
    now: datetime,
    reason: str,
    emits: Emits,
) -> None:
    if member:
        conn.execute(
            insert(segment_members).values(
                workspace_id=workspace_id, segment_id=segment_id, profile_id=profile_id, entered_at=now
            )
        )
    else:
        conn.execute(
            delete(segment_members).where(
                segment_members.c.workspace_id == workspace_id,
                segment_members.c.segment_id == segment_id,
                segment_members.c.profile_id == profile_id,
            )
        )
    props = {"segment": key, "segment_id": segment_id, "reason": reason}
    emits.add(profile_id, SEGMENT_ENTERED if member else SEGMENT_EXITED, props, now)


# --- reading
def load_tags(
    conn: Connection, workspace_id: int, profile_ids: Sequence[int]
) -> dict[int, dict[str, TagState]]:
    found: dict[int, dict[str, TagState]] = {pid: {} for pid in profile_ids}
    if profile_ids:
        t = profile_tags.c
        rows = conn.execute(
            select(t.profile_id, t.tag, t.kind, t.expires_at).where(
                t.workspace_id == workspace_id, t.profile_id.in_(profile_ids)
            )
        )
        for r in rows:
            found[r.profile_id][r.tag] = TagState(r.kind, r.expires_at)
    return found


def load_members(conn: Connection, workspace_id: int, profile_ids: Sequence[int]) -> dict[int, set[str]]:
    found: dict[int, set[str]] = {pid: set() for pid in profile_ids}
    if profile_ids:
        m, g = segment_members.c, segments.c
        rows = conn.execute(
            select(m.profile_id, g.key)
            .select_from(
                segment_members.join(segments, (g.workspace_id == m.workspace_id) & (g.id == m.segment_id))
            )
            .where(m.workspace_id == workspace_id, m.profile_id.in_(profile_ids))
        )
        for r in rows:
            found[r.profile_id].add(r.key)
    return found


def tag_values(value: Any) -> list[str]:
    """The tag suffixes a property value gives: scalars as text, each scalar of a list."""
    items = value if isinstance(value, list) else [value]
    found = []
    for item in items:
        if isinstance(item, bool):
            text = "true" if item else "false"
        elif isinstance(item, str | int | float):
            text = str(item).strip()
        else:
            continue
        if text:
            found.append(text)
    return found


def event_tags_of(
    audience: Audience, type_: str, event: str | None, properties: Any, at: datetime
) -> dict[str, Any]:
    """``{tag: expires_at}`` one event gives by the event-tag rules."""
    found: dict[str, Any] = {}
    for rule in audience.event_rules.get(event_name(type_, event), ()):
        for value in tag_values(lookup(properties, rule.path)):
            tag = f"{rule.prefix}:{value}"[:128]
            found[tag] = expiry_after(at, rule.ttl)
    return found


def merge_expiry(a: datetime | None, b: datetime | None) -> datetime | None:
    return None if a is None or b is None else max(a, b)
