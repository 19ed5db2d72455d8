"""The batch path: rebuild a workspace's tags and segment memberships from the event log.

Event tags come from one pass over the events the rules name; each tag rule and segment is then run
as one SQL query (``matching_profiles``) in dependency order, so a definition reads the memberships
written just before it. Only differences are written, each emitted like the real-time path would,
so a recompute over a consistent workspace changes nothing. Rechecks are rebuilt per profile last.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, or_, select, update

from lifeloop.audience.definitions import SEGMENT, TAG_RULE, Audience, Definition, depends_on_time, load
from lifeloop.audience.models import profile_tags, segment_members
from lifeloop.audience.service import _stages_read_tags, _View, schedule
from lifeloop.audience.state import (
    Change,
    Emits,
    TagState,
    drop_tag,
    event_tags_of,
    load_members,
    load_tags,
    merge_expiry,
    put_tag,
    set_membership,
)
from lifeloop.conditions import matching_profiles
from lifeloop.events.models import events
from lifeloop.lifecycle import service as lifecycle
from lifeloop.profiles.computed import event_name
from lifeloop.profiles.models import profiles
from lifeloop.store.engine import connect, transaction
from lifeloop.store.locks import RESOLUTION, lock_workspace
from lifeloop.store.schema import utcnow


def _live_profiles(conn: Connection, workspace_id: int) -> list[int]:
    query = select(profiles.c.id).where(
        profiles.c.workspace_id == workspace_id, profiles.c.merged_into.is_(None)
    )
    return list(conn.execute(query.order_by(profiles.c.id)).scalars())


def _event_tag_targets(
    conn: Connection, workspace_id: int, audience: Audience, now: datetime
) -> dict[tuple[int, str], datetime | None]:
    """``(profile, tag) → expiry`` over the whole log, reading only events some rule names."""
    names = set(audience.event_rules)
    if not names:
        return {}
    page_types = [t for t in ("page", "screen") if event_name(t, None) in names]
    e = events.c
    query = (
        select(e.profile_id, e.type, e.event, e.timestamp, e.properties)
        .where(
            e.workspace_id == workspace_id,
            e.profile_id.is_not(None),
            or_((e.type == "track") & e.event.in_(sorted(names)), e.type.in_(page_types)),
        )
        .execution_options(yield_per=2000)
    )
    found: dict[tuple[int, str], datetime | None] = {}
    for row in conn.execute(query):
        for tag, expires_at in event_tags_of(
            audience, row.type, row.event, row.properties, row.timestamp
        ).items():
            if expires_at is not None and expires_at <= now:
                continue
            key = (row.profile_id, tag)
            found[key] = merge_expiry(found[key], expires_at) if key in found else expires_at
    return found


def _rebuild_event_tags(
    conn: Connection, workspace_id: int, audience: Audience, live: set[int], now: datetime, emits: Emits
) -> list[Change]:
    target = {k: v for k, v in _event_tag_targets(conn, workspace_id, audience, now).items() if k[0] in live}
    t = profile_tags.c
    current = {
        (r.profile_id, r.tag): TagState(r.kind, r.expires_at)
        for r in conn.execute(
            select(t.profile_id, t.tag, t.kind, t.expires_at).where(t.workspace_id == workspace_id)
        )
    }
    changes: list[Change] = []
    for (pid, tag), state in current.items():
        if state.kind == "event" and (pid, tag) not in target:
            drop_tag(conn, workspace_id, pid, tag, "event", now=now, reason="recompute", emits=emits)
            changes.append(Change(pid, "tag", tag, "removed", "recompute"))
    for (pid, tag), expires_at in target.items():
        held = current.get((pid, tag))
        if held is None:
            put_tag(
                conn,
                workspace_id,
                pid,
                tag,
                TagState("event", expires_at),
                now=now,
                reason="recompute",
                announce=True,
                emits=emits,
            )
            changes.append(Change(pid, "tag", tag, "added", "recompute"))
        elif held.kind == "event" and held.expires_at != expires_at:
            conn.execute(
                update(profile_tags)
                .where(t.workspace_id == workspace_id, t.profile_id == pid, t.tag == tag)
                .values(expires_at=expires_at)
            )
    return changes


def _drop_stale_tags(
    conn: Connection, workspace_id: int, audience: Audience, now: datetime, emits: Emits
) -> list[Change]:
    """Expired tags, and rule tags whose rule is gone."""
    rules = {d.key for d in audience.order if d.kind == TAG_RULE}
    t = profile_tags.c
    rows = conn.execute(
        select(t.profile_id, t.tag, t.kind, t.expires_at).where(
            t.workspace_id == workspace_id,
            or_(t.expires_at <= now, t.kind == "rule"),
        )
    ).all()
    changes = []
    for r in rows:
        reason = "expired" if r.expires_at is not None and r.expires_at <= now else None
        if reason is None and r.kind == "rule" and r.tag not in rules:
            reason = "rule deleted"
        if reason:
            drop_tag(conn, workspace_id, r.profile_id, r.tag, r.kind, now=now, reason=reason, emits=emits)
            changes.append(Change(r.profile_id, "tag", r.tag, "removed", reason))
    return changes


def apply_definition(
    conn: Connection, workspace_id: int, definition: Definition, *, now: datetime, reason: str, emits: Emits
) -> list[Change]:
    """Write one tag rule's holders or one segment's members as its SQL query finds them."""
    matching = set(matching_profiles(conn, workspace_id, definition.condition, now=now))
    changes: list[Change] = []
    if definition.kind == TAG_RULE:
        t = profile_tags.c
        holders = {
            r.profile_id: r.kind
            for r in conn.execute(
                select(t.profile_id, t.kind).where(
                    t.workspace_id == workspace_id,
                    t.tag == definition.key,
                    t.expires_at.is_(None) | (t.expires_at > now),
                )
            )
        }
        for pid in sorted(matching - set(holders)):
            state = TagState("rule", None)
            put_tag(
                conn,
                workspace_id,
                pid,
                definition.key,
                state,
                now=now,
                reason=reason,
                announce=True,
                emits=emits,
                also_emit=definition.emit_on_add,
            )
            changes.append(Change(pid, "tag", definition.key, "added", reason))
        for pid in sorted(p for p, kind in holders.items() if kind == "rule" and p not in matching):
            drop_tag(conn, workspace_id, pid, definition.key, "rule", now=now, reason=reason, emits=emits)
            changes.append(Change(pid, "tag", definition.key, "removed", reason))
        return changes
    m = segment_members.c
    members = set(
        conn.execute(
            select(m.profile_id).where(m.workspace_id == workspace_id, m.segment_id == definition.id)
        ).scalars()
    )
    for pid in sorted(matching ^ members):
        entered = pid in matching
        set_membership(
            conn,
            workspace_id,
            pid,
            definition.id,
            definition.key,
            entered,
            now=now,
            reason=reason,
            emits=emits,
        )
        changes.append(Change(pid, "segment", definition.key, "entered" if entered else "exited", reason))
    return changes


def rebuild_rechecks(
    engine: Engine,
    workspace_id: int,
    *,
    now: datetime,
    chunk_size: int = 1000,
    on_progress: Callable[[int, int], None] | None = None,
) -> None:
    with connect(engine) as conn:
        live = _live_profiles(conn, workspace_id)
    for start in range(0, len(live), chunk_size):
        chunk = live[start : start + chunk_size]

        def work(conn: Connection, chunk: list[int] = chunk) -> None:
            audience = load(conn, workspace_id)
            tags, members = load_tags(conn, workspace_id, chunk), load_members(conn, workspace_id, chunk)
            for pid in chunk:
                view = _View(conn, workspace_id, pid, now=now, tags=tags[pid], members=members[pid])
                schedule(conn, workspace_id, audience, view, tags[pid])

        transaction(engine, work)
        if on_progress is not None:
            on_progress(len(chunk), len(live))


def recompute_audience(
    engine: Engine,
    workspace_id: int,
    *,
    now: datetime | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    chunk_size: int = 1000,
    event_tags: bool = True,
) -> list[Change]:
    """Rebuild event tags (unless ``event_tags`` is False), expiries, rule tags and segments of a
    workspace; returns what changed."""
    now = now or utcnow()

    def work(conn: Connection) -> list[Change]:
        lock_workspace(conn, RESOLUTION, workspace_id)  # no batch is placed while the audience is rebuilt
        audience = load(conn, workspace_id)
        live = set(_live_profiles(conn, workspace_id))
        emits = Emits()
        changes = _drop_stale_tags(conn, workspace_id, audience, now, emits)
        if event_tags:
            changes += _rebuild_event_tags(conn, workspace_id, audience, live, now, emits)
        restage = _stages_read_tags(conn, workspace_id)
        restaged = False
        for definition in audience.order:
            if definition.kind == SEGMENT and restage and not restaged:
                _restage(conn, workspace_id, changes, now)
                restaged = True
            changes += apply_definition(
                conn, workspace_id, definition, now=now, reason="recompute", emits=emits
            )
        if restage and not restaged:
            _restage(conn, workspace_id, changes, now)
        emits.flush(conn, workspace_id)
        return changes

    changes = transaction(engine, work)
    rebuild_rechecks(engine, workspace_id, now=now, chunk_size=chunk_size, on_progress=on_progress)
    return changes


def _restage(conn: Connection, workspace_id: int, changes: list[Change], now: datetime) -> None:
    """Stages that read tags follow the tags just changed (lifecycle first, then tags, then stages again)."""
    touched = sorted({c.profile_id for c in changes if c.kind == "tag"})
    lifecycle.assign_stages(conn, workspace_id, touched, now=now, reason="recompute")


def after_definition_change(
    engine: Engine, workspace_id: int, definition: Definition, *, now: datetime | None = None
) -> list[Change]:
    """A new or edited tag rule or segment: write its members now, in dependency order with what reads
    it, and (for a time-dependent condition) reschedule the sweep."""
    now = now or utcnow()

    def work(conn: Connection) -> list[Change]:
        lock_workspace(conn, RESOLUTION, workspace_id)
        audience = load(conn, workspace_id)
        start = next(
            i for i, d in enumerate(audience.order) if (d.kind, d.key) == (definition.kind, definition.key)
        )
        changes: list[Change] = []
        emits = Emits()
        for item in audience.order[start:]:  # later definitions may read this one
            changes += apply_definition(conn, workspace_id, item, now=now, reason="definition", emits=emits)
        if _stages_read_tags(conn, workspace_id):
            _restage(conn, workspace_id, changes, now)
        emits.flush(conn, workspace_id)
        return changes

    changes = transaction(engine, work)
    if depends_on_time(definition.condition) or any(c.kind == "tag" for c in changes):
        rebuild_rechecks(engine, workspace_id, now=now)
    return changes


def describe(change: Change) -> dict[str, Any]:
    return {"profile_id": change.profile_id, "kind": change.kind, "key": change.key, "action": change.action}
