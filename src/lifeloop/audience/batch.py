"""The batch path: rebuild a workspace's tags and segment memberships from the event log.

Event tags come from one grouped query per rule property over the events the rules name; each tag
rule and segment is then run as one SQL query (``matching_profiles``) in dependency order, so a
definition reads the memberships written just before it. Only differences are written (multi-row
statements), each emitted like the real-time path would, so a recompute over a consistent workspace
changes nothing. Rechecks are rebuilt last, in SQL, per range of profiles.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, case, func, select, update

from lifeloop.audience.definitions import (
    SEGMENT,
    TAG_RULE,
    Audience,
    Definition,
    depends_on_time,
    expiry_after,
    load,
    uses,
)
from lifeloop.audience.models import audience_rechecks, profile_tags, segment_members
from lifeloop.audience.service import LIFECYCLE_LAG, _stages_read_tags
from lifeloop.audience.state import (
    Change,
    Emits,
    TagState,
    drop_tags,
    merge_expiry,
    put_tags,
    set_memberships,
    tag_values,
)
from lifeloop.conditions import matching_profiles
from lifeloop.conditions.ast import InStage
from lifeloop.conditions.columnar import ColumnarPlan, text, timestamp
from lifeloop.conditions.evaluator import lookup
from lifeloop.conditions.sql_json import Json, JsonSql
from lifeloop.events.models import events
from lifeloop.lifecycle import service as lifecycle
from lifeloop.lifecycle.columnar import aware
from lifeloop.lifecycle.models import lifecycle_rechecks
from lifeloop.lifecycle.rechecks import recheck_candidates, store_rechecks
from lifeloop.profiles.computed import raw_names
from lifeloop.store.engine import connect, transaction
from lifeloop.store.locks import RESOLUTION, lock_workspace
from lifeloop.store.rows import IN_CHUNK, delete_in, fetch_tuples, insert_rows
from lifeloop.store.schema import utcnow

if TYPE_CHECKING:  # DuckDB and pyarrow load only where a columnar copy is really used
    from lifeloop.columnar import Workspace


def _event_tag_targets(
    conn: Connection, workspace_id: int, audience: Audience, now: datetime
) -> dict[tuple[int, str], datetime | None]:
    """``(profile, tag) → expiry`` over the whole log, as ``state.event_tags_of`` gives it event by event.

    The database groups the events per (profile, value of the rule's property) with the latest time, so
    Python sees each distinct value of a profile once (and parses each distinct JSON text once), not
    every event."""
    json_sql = JsonSql(workspace_id, postgresql=conn.dialect.name == "postgresql")
    parsed: dict[str, list[str]] = {}
    found: dict[tuple[int, str], datetime | None] = {}
    e = events.c
    for name, rules in audience.event_rules.items():
        for path in sorted({rule.path for rule in rules}):
            value = json_sql.json_text(Json(e.properties, path)).label("value")
            query = (
                select(e.profile_id, value, func.max(e.timestamp).label("last"))
                .where(e.workspace_id == workspace_id, e.profile_id.is_not(None), raw_names(events, name))
                .group_by(e.profile_id, value)
            )
            for row in conn.execute(query):
                if row.value is None:
                    continue
                if row.value not in parsed:
                    parsed[row.value] = tag_values(lookup({"v": json.loads(row.value)}, ("v",)))
                for rule in rules:
                    if rule.path != path:
                        continue
                    expires_at = expiry_after(row.last, rule.ttl)
                    if expires_at is not None and expires_at <= now:
                        continue
                    for suffix in parsed[row.value]:
                        key = (row.profile_id, f"{rule.prefix}:{suffix}"[:128])
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
    gone = sorted(
        (pid, tag, "event")
        for (pid, tag), held in current.items()
        if held.kind == "event" and (pid, tag) not in target
    )
    new = sorted(
        (pid, tag, TagState("event", at)) for (pid, tag), at in target.items() if (pid, tag) not in current
    )
    moved: dict[tuple[str, datetime | None], list[int]] = {}  # (tag, new expiry) → profiles
    for (pid, tag), at in target.items():
        held = current.get((pid, tag))
        if held is not None and held.kind == "event" and held.expires_at != at:
            moved.setdefault((tag, at), []).append(pid)
    drop_tags(conn, workspace_id, gone, now=now, reason="recompute", emits=emits)
    put_tags(conn, workspace_id, new, now=now, reason="recompute", announce=True, emits=emits)
    for (tag, at), pids in moved.items():
        for start in range(0, len(pids), IN_CHUNK):
            chunk = pids[start : start + IN_CHUNK]
            where = (t.workspace_id == workspace_id, t.tag == tag, t.profile_id.in_(chunk))
            conn.execute(update(profile_tags).where(*where).values(expires_at=at))
    return [Change(pid, "tag", tag, "removed", "recompute") for pid, tag, _ in gone] + [
        Change(pid, "tag", tag, "added", "recompute") for pid, tag, _ in new
    ]


def _drop_stale_tags(
    conn: Connection, workspace_id: int, audience: Audience, now: datetime, emits: Emits
) -> list[Change]:
    """Expired tags, and rule tags whose rule is gone (two reads, each served by an index)."""
    rules = sorted(d.key for d in audience.order if d.kind == TAG_RULE)
    t = profile_tags.c
    columns = (t.profile_id, t.tag, t.kind)
    expired = conn.execute(select(*columns).where(t.workspace_id == workspace_id, t.expires_at <= now)).all()
    orphaned = conn.execute(
        select(*columns).where(
            t.workspace_id == workspace_id,
            t.kind == "rule",
            t.tag.not_in(rules),
            t.expires_at.is_(None) | (t.expires_at > now),
        )
    ).all()
    stale: dict[str, list[tuple[int, str, str]]] = {}  # reason → (profile, tag, kind)
    for reason, rows in (("expired", expired), ("rule deleted", orphaned)):
        if rows:
            stale[reason] = [(r.profile_id, r.tag, r.kind) for r in rows]
    changes = []
    for reason, tags in stale.items():
        drop_tags(conn, workspace_id, tags, now=now, reason=reason, emits=emits)
        changes += [Change(pid, "tag", tag, "removed", reason) for pid, tag, _ in tags]
    return changes


def apply_definition(
    conn: Connection,
    workspace_id: int,
    definition: Definition,
    *,
    now: datetime,
    reason: str,
    emits: Emits,
    columnar: Workspace | None = None,
    plan: ColumnarPlan | None = None,
) -> list[Change]:
    """Write one tag rule's holders or one segment's members as its query finds them: SQL on the
    operational database, or DuckDB on ``columnar`` (with the values of a shared ``plan``, and compared
    there with the stored holders or members)."""
    key = definition.key
    if columnar is not None:
        added, removed = _columnar_differences(conn, columnar, definition, plan or columnar.plan)
    else:
        matching = set(matching_profiles(conn, workspace_id, definition.condition, now=now))
        added, removed = _differences(conn, workspace_id, definition, matching, now)
    if definition.kind == TAG_RULE:
        rule = TagState("rule", None)
        given = [(pid, key, rule) for pid in added]
        put_tags(
            conn,
            workspace_id,
            given,
            now=now,
            reason=reason,
            announce=True,
            emits=emits,
            also_emit=definition.emit_on_add,
        )
        dropped = [(pid, key, "rule") for pid in removed]
        drop_tags(conn, workspace_id, dropped, now=now, reason=reason, emits=emits)
        return [Change(pid, "tag", key, "added", reason) for pid in added] + [
            Change(pid, "tag", key, "removed", reason) for pid in removed
        ]
    changes: list[Change] = []
    for entered, pids in ((True, added), (False, removed)):
        set_memberships(
            conn, workspace_id, definition.id, key, pids, entered, now=now, reason=reason, emits=emits
        )
        action = "entered" if entered else "exited"
        changes += [Change(pid, "segment", key, action, reason) for pid in pids]
    return changes


def _differences(
    conn: Connection, workspace_id: int, definition: Definition, matching: set[int], now: datetime
) -> tuple[list[int], list[int]]:
    """(profiles to give the tag or let enter, profiles to take it from or let exit), against the
    operational database: a tag held for another reason (manual, event) is not a rule's to remove."""
    if definition.kind == TAG_RULE:
        t = profile_tags.c
        held = select(t.profile_id, t.kind).where(
            t.workspace_id == workspace_id,
            t.tag == definition.key,
            t.expires_at.is_(None) | (t.expires_at > now),
        )
        holders: dict[int, str] = dict(fetch_tuples(conn, held))
        removed = sorted(p for p, kind in holders.items() if kind == "rule" and p not in matching)
        return sorted(matching - set(holders)), removed
    m = segment_members.c
    query = select(m.profile_id).where(m.workspace_id == workspace_id, m.segment_id == definition.id)
    members = {pid for (pid,) in fetch_tuples(conn, query)}
    return sorted(matching - members), sorted(members - matching)


def _columnar_differences(
    conn: Connection, columnar: Workspace, definition: Definition, plan: ColumnarPlan
) -> tuple[list[int], list[int]]:
    """``_differences`` in DuckDB, against the stored state as ``conn`` sees it (``Workspace.state``)."""
    columnar.match(definition.condition, plan=plan, conn=conn)
    if definition.kind == TAG_RULE:
        columnar.state(conn, "tags", narrow={"tags": ("tag", [definition.key])})
        held = (
            f"SELECT profile_id, kind = 'rule' AS ours FROM st_tags WHERE tag = {text(definition.key)} "
            f"AND (expires_at IS NULL OR expires_at > {timestamp(columnar.now)})"
        )
    else:
        columnar.state(conn, "members", narrow={"members": ("segment_id", [definition.id])})
        held = f"SELECT profile_id, TRUE AS ours FROM st_members WHERE segment_id = {int(definition.id)}"
    # One join for both sides: matching and not held (to add), held by the rule and not matching (to drop).
    rows = columnar.db.execute(
        f"""
        SELECT coalesce(m.pid, h.profile_id) AS pid, m.pid IS NOT NULL AS add
        FROM (SELECT pid FROM matched WHERE hit) m FULL JOIN ({held}) h ON h.profile_id = m.pid
        WHERE h.profile_id IS NULL OR (m.pid IS NULL AND h.ours)
        ORDER BY pid
        """
    ).fetchnumpy()
    pids, add = rows["pid"], rows["add"]
    return [int(p) for p in pids[add]], [int(p) for p in pids[~add]]


def _write_rechecks(
    conn: Connection, workspace_id: int, audience: Audience, *, now: datetime, low: int, high: int
) -> None:
    """``service.schedule`` for every live profile with an id in ``low..high``, in SQL: the conditions'
    time thresholds and window exits (``lifecycle.rechecks``), tag expiries and, when a condition reads
    a stage, the lifecycle recheck (no sooner than ``LIFECYCLE_LAG`` from now)."""
    conditions = audience.conditions()
    plan, candidates = recheck_candidates(conn, workspace_id, conditions, now=now, low=low, high=high)
    t = profile_tags.c
    candidates.append(
        select(t.profile_id, t.expires_at).where(
            t.workspace_id == workspace_id, *plan.profiles(t.profile_id), t.expires_at > plan.at(now)
        )
    )
    if any(uses(c, InStage) for c in conditions):
        r, soonest = lifecycle_rechecks.c, plan.at(now + LIFECYCLE_LAG)
        staged = case((r.recheck_at > soonest, r.recheck_at), else_=soonest)
        candidates.append(
            select(r.profile_id, staged).where(r.workspace_id == workspace_id, *plan.profiles(r.profile_id))
        )
    store_rechecks(conn, audience_rechecks, {"workspace_id": workspace_id}, plan, candidates)


def rebuild_rechecks(
    engine: Engine,
    workspace_id: int,
    *,
    now: datetime,
    chunk_size: int = 20_000,
    on_progress: Callable[[int, int], None] | None = None,
) -> None:
    """Every live profile's audience recheck, per range of ``chunk_size`` profile ids (a transaction each)."""
    with connect(engine) as conn:
        live = lifecycle.live_profiles(conn, workspace_id)
    for start in range(0, len(live), chunk_size):
        chunk = live[start : start + chunk_size]

        def work(conn: Connection, low: int = chunk[0], high: int = chunk[-1]) -> None:
            _write_rechecks(conn, workspace_id, load(conn, workspace_id), now=now, low=low, high=high)

        transaction(engine, work)
        if on_progress is not None:
            on_progress(len(chunk), len(live))


def recompute_audience(
    engine: Engine,
    workspace_id: int,
    *,
    now: datetime | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    chunk_size: int = 20_000,
    event_tags: bool = True,
    analytics_path: str | Path | None = None,
    columnar_copy: Workspace | None = None,
) -> list[Change]:
    """Rebuild event tags (unless ``event_tags`` is False), expiries, rule tags and segments of a
    workspace; returns what changed. With ``analytics_path``, rule tags, segments and rechecks are
    evaluated on the columnar copy of the events in that analytics store (synced first), or on
    ``columnar_copy``, such a copy already open and synced."""
    now = now or utcnow()
    if columnar_copy is not None:
        changes = _rebuild(engine, workspace_id, now=now, event_tags=event_tags, columnar=columnar_copy)
        _columnar_rechecks(engine, columnar_copy, chunk_size=chunk_size, on_progress=on_progress)
        return changes
    if analytics_path is not None:
        from lifeloop.analytics.sync import sync  # pandas and DuckDB: only for the columnar path
        from lifeloop.columnar import Workspace

        sync(engine, analytics_path, workspace_id=workspace_id, profile_map=False)
        with Workspace(engine, workspace_id, analytics_path, now=now) as columnar:
            changes = _rebuild(engine, workspace_id, now=now, event_tags=event_tags, columnar=columnar)
            _columnar_rechecks(engine, columnar, chunk_size=chunk_size, on_progress=on_progress)
        return changes
    changes = _rebuild(engine, workspace_id, now=now, event_tags=event_tags)
    rebuild_rechecks(engine, workspace_id, now=now, chunk_size=chunk_size, on_progress=on_progress)
    return changes


def _rebuild(
    engine: Engine, workspace_id: int, *, now: datetime, event_tags: bool, columnar: Workspace | None = None
) -> list[Change]:
    """Stale and event tags, then every tag rule and segment in dependency order, in one transaction."""

    def work(conn: Connection) -> list[Change]:
        lock_workspace(conn, RESOLUTION, workspace_id)  # no batch is placed while the audience is rebuilt
        audience = load(conn, workspace_id)
        emits = Emits()
        changes = _drop_stale_tags(conn, workspace_id, audience, now, emits)
        if event_tags:
            live = set(lifecycle.live_profiles(conn, workspace_id))
            changes += _rebuild_event_tags(conn, workspace_id, audience, live, now, emits)
        restage = _stages_read_tags(conn, workspace_id)
        restaged = False
        plan = columnar.plan if columnar is not None else None
        if columnar is not None:
            for definition in audience.order:
                columnar.plan.test(definition.condition)  # every definition's values, computed in one scan
            # and those that read no tag, stage or segment evaluated together, in one pass
            columnar.match_together((d.condition for d in audience.order), conn)
        for definition in audience.order:
            if definition.kind == SEGMENT and restage and not restaged:
                _restage(conn, workspace_id, changes, now)
                restaged = True
            changes += apply_definition(
                conn,
                workspace_id,
                definition,
                now=now,
                reason="recompute",
                emits=emits,
                columnar=columnar,
                plan=plan,
            )
        if restage and not restaged:
            _restage(conn, workspace_id, changes, now)
        emits.flush(conn, workspace_id)
        return changes

    return transaction(engine, work)


def _columnar_rechecks(
    engine: Engine,
    columnar: Workspace,
    *,
    chunk_size: int,
    on_progress: Callable[[int, int], None] | None,
) -> None:
    """``_write_rechecks`` for every live profile on the columnar copy: the conditions' moments in DuckDB,
    with the tag expiries and (when a condition reads a stage) the lifecycle rechecks as stored
    (``Workspace.state``); only the rechecks that differ from the stored ones are written."""
    from lifeloop.analytics.state_copy import Later  # DuckDB: only for the columnar path

    ws, now = columnar.workspace_id, columnar.now
    a = audience_rechecks.c
    with connect(engine) as conn:
        audience = load(conn, ws)
        conditions = audience.conditions()
        plan = columnar.plan
        columnar.evaluate("audience_targets", plan, {"recheck_at": plan.recheck(conditions)}, conn)
        staged = any(uses(c, InStage) for c in conditions)
        # Where the state is read from the tables (no log), only what is compared: expiring tags, and
        # the stage rechecks when a condition reads a stage.
        sources = ("tags", "audience_rechecks", *(("stage_rechecks",) if staged else ()))
        columnar.state(conn, *sources, narrow={"tags": ("expires_at", Later(now))})
    soonest, at = timestamp(now + LIFECYCLE_LAG), timestamp(now)
    staged_rechecks = (
        f"SELECT profile_id AS pid, min(greatest(recheck_at, {soonest})) AS moment "
        "FROM st_stage_rechecks GROUP BY profile_id"
        if staged
        else "SELECT NULL::BIGINT AS pid, NULL::TIMESTAMP AS moment WHERE FALSE"
    )
    rows = columnar.db.execute(
        f"""
        WITH staged AS ({staged_rechecks}), expiring AS (
            SELECT profile_id AS pid, min(expires_at) AS moment
            FROM st_tags WHERE expires_at > {at} GROUP BY profile_id
        ), current_rechecks AS (
            SELECT profile_id AS pid, recheck_at FROM st_audience_rechecks
        ), target AS (
            SELECT t.pid, least(t.recheck_at, x.moment, s.moment) AS moment
            FROM audience_targets t
            LEFT JOIN expiring x ON x.pid = t.pid
            LEFT JOIN staged s ON s.pid = t.pid
        )
        SELECT coalesce(target.pid, c.pid), target.moment
        FROM (SELECT pid, moment FROM target WHERE moment IS NOT NULL) target
        FULL JOIN current_rechecks c ON c.pid = target.pid
        WHERE target.moment IS DISTINCT FROM c.recheck_at
        ORDER BY 1
        """
    ).fetchall()
    if on_progress is not None and not rows:
        on_progress(0, 0)
    for start in range(0, len(rows), chunk_size):
        chunk = rows[start : start + chunk_size]

        def work(conn: Connection, chunk: list[Any] = chunk) -> None:
            delete_in(conn, audience_rechecks, "profile_id", [pid for pid, _ in chunk], a.workspace_id == ws)
            times = [(ws, pid, aware(at)) for pid, at in chunk if at is not None]
            insert_rows(conn, audience_rechecks, ("workspace_id", "profile_id", "recheck_at"), times)

        transaction(engine, work)
        if on_progress is not None:
            on_progress(len(chunk), len(rows))


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
