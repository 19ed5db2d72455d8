"""Writing tags and memberships with the events that announce them, and reading them per profile."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select

from lifeloop.audience.definitions import Audience, expiry_after
from lifeloop.audience.models import profile_tags, segment_members, segments
from lifeloop.conditions.evaluator import lookup
from lifeloop.events.messages import Message
from lifeloop.events.own import record_own_events
from lifeloop.profiles.computed import event_name
from lifeloop.store.rows import delete_in, insert_rows

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
        record_own_events(conn, workspace_id, pending)


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def put_tags(
    conn: Connection,
    workspace_id: int,
    tags: Sequence[tuple[int, str, TagState]],
    *,
    now: datetime,
    reason: str,
    announce: bool,
    emits: Emits,
    also_emit: str | None = None,
) -> None:
    """Give (or replace) ``(profile, tag, state)`` tags: a few multi-row statements for any number."""
    if not tags:
        return
    t = profile_tags.c
    by_tag: dict[str, list[int]] = {}
    for pid, tag, _state in tags:
        by_tag.setdefault(tag, []).append(pid)
    for tag, pids in by_tag.items():
        delete_in(conn, profile_tags, "profile_id", pids, t.workspace_id == workspace_id, t.tag == tag)
    columns = ("workspace_id", "profile_id", "tag", "kind", "added_at", "expires_at")
    rows = [(workspace_id, pid, tag, state.kind, now, state.expires_at) for pid, tag, state in tags]
    insert_rows(conn, profile_tags, columns, rows)
    if announce:
        for pid, tag, state in tags:
            props = {"tag": tag, "kind": state.kind, "reason": reason, "expires_at": _iso(state.expires_at)}
            emits.add(pid, TAG_ADDED, props, now)
            if also_emit:
                emits.add(pid, also_emit, props, now)


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
    put_tags(
        conn,
        workspace_id,
        [(profile_id, tag, state)],
        now=now,
        reason=reason,
        announce=announce,
        emits=emits,
        also_emit=also_emit,
    )


def drop_tags(
    conn: Connection,
    workspace_id: int,
    tags: Sequence[tuple[int, str, str]],
    *,
    now: datetime,
    reason: str,
    emits: Emits,
) -> None:
    """Remove ``(profile, tag, kind)`` tags, each announced by a ``Tag Removed`` event."""
    t = profile_tags.c
    by_tag: dict[str, list[int]] = {}
    for pid, tag, kind in tags:
        by_tag.setdefault(tag, []).append(pid)
        emits.add(pid, TAG_REMOVED, {"tag": tag, "kind": kind, "reason": reason}, now)
    for tag, pids in by_tag.items():
        delete_in(conn, profile_tags, "profile_id", pids, t.workspace_id == workspace_id, t.tag == tag)


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
    drop_tags(conn, workspace_id, [(profile_id, tag, kind)], now=now, reason=reason, emits=emits)


def set_memberships(
    conn: Connection,
    workspace_id: int,
    segment_id: int,
    key: str,
    profile_ids: Sequence[int],
    member: bool,
    *,
    now: datetime,
    reason: str,
    emits: Emits,
) -> None:
    """Let ``profile_ids`` enter (``member``) or exit a segment, each with its event."""
    if member:
        columns = ("workspace_id", "segment_id", "profile_id", "entered_at")
        insert_rows(conn, segment_members, columns, [(workspace_id, segment_id, p, now) for p in profile_ids])
    else:
        m = segment_members.c
        where = (m.workspace_id == workspace_id, m.segment_id == segment_id)
        delete_in(conn, segment_members, "profile_id", profile_ids, *where)
    props = {"segment": key, "segment_id": segment_id, "reason": reason}
    for pid in profile_ids:
        emits.add(pid, SEGMENT_ENTERED if member else SEGMENT_EXITED, props, now)


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
    set_memberships(
        conn, workspace_id, segment_id, key, [profile_id], member, now=now, reason=reason, emits=emits
    )


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
