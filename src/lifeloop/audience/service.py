"""Tags and segment membership kept current: in real time as events are placed, by a sweep when only
time passes, and in batch (``batch.recompute_audience``) — the three give the same state.

Per profile, in dependency order: expired tags are removed, event tags from the batch's events are
added or refreshed, then every tag rule and segment is evaluated in ``definitions.load`` order (a
definition after those its condition reads). Lifecycle stages come first (the resolver assigns them
before calling ``refresh``); when a tag changes and the active lifecycle model reads ``has_tag`` (the
wecom ``mature`` stage reads ``vip``) the profile's stage is re-assigned before segments are read.
Each change is emitted as an event on the profile: ``Tag Added``/``Tag Removed``,
``Segment Entered``/``Segment Exited`` (never counted as interactions).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, delete, insert, select, update

from lifeloop.audience.definitions import SEGMENT, TAG_RULE, Audience, load, uses, valid_tag
from lifeloop.audience.models import audience_rechecks, profile_tags, segment_members
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
from lifeloop.conditions import StoredProfile, evaluate
from lifeloop.conditions.ast import HasTag, InStage
from lifeloop.errors import Conflict, InvalidInput, NotFound
from lifeloop.lifecycle import service as lifecycle
from lifeloop.lifecycle.models import lifecycle_rechecks
from lifeloop.lifecycle.rechecks import next_recheck
from lifeloop.profiles.models import profiles
from lifeloop.store.engine import connect, transaction
from lifeloop.store.locks import RESOLUTION, lock_workspace
from lifeloop.store.schema import utcnow

# When a stage the audience reads is due to be re-checked but the lifecycle sweep has not run yet.
LIFECYCLE_LAG = timedelta(minutes=1)


class _View(StoredProfile):
    """A stored profile whose tags and segments are the ones being written in this pass."""

    def __init__(
        self,
        conn: Connection,
        workspace_id: int,
        profile_id: int,
        *,
        now: datetime,
        tags: dict[str, TagState],
        members: set[str],
    ):
        super().__init__(conn, workspace_id, profile_id, now=now)
        self._tags, self._members = tags, members

    def has_tag(self, tag: str) -> bool:
        state = self._tags.get(tag)
        return state is not None and state.holds(self.now)

    def in_segment(self, key: str) -> bool:
        return key in self._members


def _stages_read_tags(conn: Connection, workspace_id: int) -> bool:
    model = lifecycle.active_model(conn, workspace_id)
    return model is not None and any(uses(s.condition, HasTag) for s in model.stages)


def schedule(
    conn: Connection,
    workspace_id: int,
    audience: Audience,
    view: StoredProfile,
    tags: dict[str, TagState],
) -> datetime | None:
    """When the profile's audience could next change with no event; stored for the sweep."""
    now, pid = view.now, view.profile_id
    moments = [s.expires_at for s in tags.values() if s.expires_at is not None and s.expires_at > now]
    conditions = audience.conditions()
    if (at := next_recheck(conditions, view, conn, workspace_id, pid)) is not None:
        moments.append(at)
    if any(uses(c, InStage) for c in conditions):
        staged = conn.execute(
            select(lifecycle_rechecks.c.recheck_at).where(
                lifecycle_rechecks.c.workspace_id == workspace_id, lifecycle_rechecks.c.profile_id == pid
            )
        ).scalar()
        if staged is not None:
            moments.append(max(staged, now + LIFECYCLE_LAG))
    at = min(moments) if moments else None
    where = (audience_rechecks.c.workspace_id == workspace_id, audience_rechecks.c.profile_id == pid)
    conn.execute(delete(audience_rechecks).where(*where))
    if at is not None:
        conn.execute(
            insert(audience_rechecks).values(workspace_id=workspace_id, profile_id=pid, recheck_at=at)
        )
    return at


def _evaluate_profile(
    conn: Connection,
    workspace_id: int,
    audience: Audience,
    pid: int,
    tags: dict[str, TagState],
    members: set[str],
    event_tags: dict[str, datetime | None],
    *,
    now: datetime,
    reason: str,
    restage: bool,
    emits: Emits,
) -> list[Change]:
    changes: list[Change] = []
    rule_tags = {d.key: d for d in audience.order if d.kind == TAG_RULE}
    for tag, state in list(tags.items()):
        gone = "expired" if not state.holds(now) else None
        if gone is None and state.kind == "rule" and tag not in rule_tags:
            gone = "rule deleted"
        if gone:
            drop_tag(conn, workspace_id, pid, tag, state.kind, now=now, reason=gone, emits=emits)
            del tags[tag]
            changes.append(Change(pid, "tag", tag, "removed", gone))
    for tag, expires_at in event_tags.items():
        current = tags.get(tag)
        if current is None:
            tags[tag] = TagState("event", expires_at)
            put_tag(
                conn, workspace_id, pid, tag, tags[tag], now=now, reason=reason, announce=True, emits=emits
            )
            changes.append(Change(pid, "tag", tag, "added", reason))
        elif current.kind == "event" and current.expires_at is not None:
            later = None if expires_at is None else max(expires_at, current.expires_at)
            if later != current.expires_at:  # re-applied: the expiry moves on, no new event
                current.expires_at = later
                conn.execute(
                    update(profile_tags)
                    .where(
                        profile_tags.c.workspace_id == workspace_id,
                        profile_tags.c.profile_id == pid,
                        profile_tags.c.tag == tag,
                    )
                    .values(expires_at=later)
                )
    view = _View(conn, workspace_id, pid, now=now, tags=tags, members=members)
    tags_changed = bool(changes)
    for definition in audience.order:
        if definition.kind == SEGMENT and tags_changed and restage:
            lifecycle.assign_stages(conn, workspace_id, [pid], now=now, reason=reason)
            view = _View(conn, workspace_id, pid, now=now, tags=tags, members=members)
            tags_changed = False
        holds = evaluate(definition.condition, view)
        key = definition.key
        if definition.kind == TAG_RULE:
            current = tags.get(key)
            if holds and current is None:
                tags[key] = TagState("rule", None)
                put_tag(
                    conn,
                    workspace_id,
                    pid,
                    key,
                    tags[key],
                    now=now,
                    reason=reason,
                    announce=True,
                    emits=emits,
                    also_emit=definition.emit_on_add,
                )
                changes.append(Change(pid, "tag", key, "added", reason))
                tags_changed = True
            elif not holds and current is not None and current.kind == "rule":
                drop_tag(conn, workspace_id, pid, key, "rule", now=now, reason=reason, emits=emits)
                del tags[key]
                changes.append(Change(pid, "tag", key, "removed", reason))
                tags_changed = True
        elif holds != (key in members):
            set_membership(
                conn, workspace_id, pid, definition.id, key, holds, now=now, reason=reason, emits=emits
            )
            (members.add if holds else members.discard)(key)
            changes.append(Change(pid, "segment", key, "entered" if holds else "exited", reason))
    if tags_changed and restage:
        lifecycle.assign_stages(conn, workspace_id, [pid], now=now, reason=reason)
    schedule(conn, workspace_id, audience, view, tags)
    return changes


def evaluate_profiles(
    conn: Connection,
    workspace_id: int,
    profile_ids: Iterable[int],
    *,
    now: datetime,
    reason: str,
    event_tags: dict[int, dict[str, datetime | None]] | None = None,
    audience: Audience | None = None,
) -> list[Change]:
    """Bring the tags and segments of ``profile_ids`` up to date (one profile at a time)."""
    ids = sorted(set(profile_ids))
    audience = audience or load(conn, workspace_id)
    tags = load_tags(conn, workspace_id, ids)
    members = load_members(conn, workspace_id, ids)
    restage = _stages_read_tags(conn, workspace_id)
    changes: list[Change] = []
    emits = Emits()
    for pid in ids:
        changes += _evaluate_profile(
            conn,
            workspace_id,
            audience,
            pid,
            tags[pid],
            members[pid],
            (event_tags or {}).get(pid, {}),
            now=now,
            reason=reason,
            restage=restage,
            emits=emits,
        )
    emits.flush(conn, workspace_id)
    return changes


def refresh(
    conn: Connection, workspace_id: int, rows: Sequence[Any], placed: dict[int, int], *, now: datetime
) -> list[Change]:
    """The real-time path: called by the resolver with a batch's event rows and where they were placed."""
    audience = load(conn, workspace_id)
    if audience.empty:
        return []
    event_tags: dict[int, dict[str, datetime | None]] = {}
    if audience.event_rules:
        for row in rows:
            for tag, expires_at in event_tags_of(
                audience, row.type, row.event, row.properties, row.timestamp
            ).items():
                if expires_at is not None and expires_at <= now:
                    continue  # an old event (an import) whose tag has already run out
                mine = event_tags.setdefault(placed[row.id], {})
                mine[tag] = merge_expiry(mine[tag], expires_at) if tag in mine else expires_at
    return evaluate_profiles(
        conn, workspace_id, placed.values(), now=now, reason="event", event_tags=event_tags, audience=audience
    )


def due_profiles(conn: Connection, workspace_id: int, now: datetime, *, limit: int) -> list[int]:
    rows = conn.execute(
        select(audience_rechecks.c.profile_id)
        .where(audience_rechecks.c.workspace_id == workspace_id, audience_rechecks.c.recheck_at <= now)
        .order_by(audience_rechecks.c.recheck_at)
        .limit(limit)
    )
    return [r[0] for r in rows]


def sweep(engine: Engine, workspace_id: int, *, now: datetime | None = None, batch_size: int = 500) -> int:
    """Apply time-only changes (time rules, expiring tags) that are due; returns profiles re-evaluated."""
    now = now or utcnow()
    total = 0
    while True:

        def work(conn: Connection) -> int:
            lock_workspace(conn, RESOLUTION, workspace_id)  # never alongside the resolver's writes
            due = due_profiles(conn, workspace_id, now, limit=batch_size)
            evaluate_profiles(conn, workspace_id, due, now=now, reason="time")
            return len(due)

        done = transaction(engine, work)
        total += done
        if done < batch_size:
            return total


def workspaces_to_sweep(engine: Engine) -> list[int]:
    with connect(engine) as conn:
        query = select(audience_rechecks.c.workspace_id).distinct()
        return [r[0] for r in conn.execute(query.execution_options(cross_workspace=True))]


def merge_profiles(conn: Connection, workspace_id: int, *, loser: int, winner: int) -> None:
    """The winner keeps every tag and membership of both (the later expiry of a shared tag); the winner
    is re-evaluated with its batch, which removes what no longer holds."""
    both = load_tags(conn, workspace_id, [loser, winner])
    for tag, state in both[loser].items():
        where = (profile_tags.c.workspace_id == workspace_id, profile_tags.c.tag == tag)
        if tag in both[winner]:
            kept = merge_expiry(state.expires_at, both[winner][tag].expires_at)
            conn.execute(
                update(profile_tags)
                .where(*where, profile_tags.c.profile_id == winner)
                .values(expires_at=kept)
            )
            conn.execute(delete(profile_tags).where(*where, profile_tags.c.profile_id == loser))
        else:
            conn.execute(
                update(profile_tags)
                .where(*where, profile_tags.c.profile_id == loser)
                .values(profile_id=winner)
            )
    m = segment_members.c
    theirs = set(
        conn.execute(
            select(m.segment_id).where(m.workspace_id == workspace_id, m.profile_id == winner)
        ).scalars()
    )
    for segment_id in conn.execute(
        select(m.segment_id).where(m.workspace_id == workspace_id, m.profile_id == loser)
    ).scalars():
        held = (m.workspace_id == workspace_id, m.segment_id == segment_id, m.profile_id == loser)
        if segment_id in theirs:
            conn.execute(delete(segment_members).where(*held))
        else:
            conn.execute(update(segment_members).where(*held).values(profile_id=winner))
    conn.execute(
        delete(audience_rechecks).where(
            audience_rechecks.c.workspace_id == workspace_id, audience_rechecks.c.profile_id == loser
        )
    )


# --- manual tags --------------------------------------------------------------------------------
def _live_profile(conn: Connection, workspace_id: int, profile_id: int) -> None:
    row = conn.execute(
        select(profiles.c.merged_into).where(
            profiles.c.workspace_id == workspace_id, profiles.c.id == profile_id
        )
    ).first()
    if row is None:
        raise NotFound(f"no profile {profile_id}")
    if row.merged_into is not None:
        raise NotFound(f"profile {profile_id} was merged into {row.merged_into}")


def add_manual_tag(
    conn: Connection,
    workspace_id: int,
    profile_id: int,
    tag: str,
    *,
    expires_at: datetime | None = None,
    now: datetime | None = None,
) -> list[Change]:
    """Tag a profile by hand (until ``expires_at``); rule tags and segments reading it follow at once."""
    now = now or utcnow()
    valid_tag(tag)
    if expires_at is not None and (expires_at.tzinfo is None or expires_at <= now):
        raise InvalidInput("expires_at must be a future time with a time zone", field="expires_at")
    _live_profile(conn, workspace_id, profile_id)
    current = load_tags(conn, workspace_id, [profile_id])[profile_id].get(tag)
    held = current is not None and current.holds(now)
    emits = Emits()
    put_tag(
        conn,
        workspace_id,
        profile_id,
        tag,
        TagState("manual", expires_at),
        now=now,
        reason="manual",
        announce=not held,
        emits=emits,
    )
    emits.flush(conn, workspace_id)
    changes = [] if held else [Change(profile_id, "tag", tag, "added", "manual")]
    return changes + evaluate_profiles(conn, workspace_id, [profile_id], now=now, reason="manual")


def remove_manual_tag(
    conn: Connection, workspace_id: int, profile_id: int, tag: str, *, now: datetime | None = None
) -> list[Change]:
    now = now or utcnow()
    _live_profile(conn, workspace_id, profile_id)
    current = load_tags(conn, workspace_id, [profile_id])[profile_id].get(tag)
    if current is None or not current.holds(now):
        raise NotFound(f'profile {profile_id} has no tag "{tag}"')
    if current.kind == "rule":
        raise Conflict(f'"{tag}" is held by its tag rule; change or delete the rule instead')
    emits = Emits()
    drop_tag(conn, workspace_id, profile_id, tag, current.kind, now=now, reason="manual", emits=emits)
    emits.flush(conn, workspace_id)
    changes = [Change(profile_id, "tag", tag, "removed", "manual")]
    return changes + evaluate_profiles(conn, workspace_id, [profile_id], now=now, reason="manual")
