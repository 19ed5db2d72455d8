"""Stage assignment: in real time as events are placed, by a sweep for time-only changes, and in batch.

Every change of stage is written as history (from, to, at, reason) and emitted as events on the
profile — ``Lifecycle Stage Exited`` then ``Lifecycle Stage Entered`` (plus the stage's own
``on_enter`` event) — which journeys trigger on. The three paths use the same model and give the
same stages: the real-time and sweep paths evaluate one profile at a time (``StoredProfile``), the
batch path runs each stage's condition for all profiles as one SQL query.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, delete, func, insert, select, update

from lifeloop.conditions import StoredProfile, matching_profiles
from lifeloop.errors import NotFound
from lifeloop.events import store as event_store
from lifeloop.events.messages import Message
from lifeloop.lifecycle.definition import LifecycleModel, load_model, preset
from lifeloop.lifecycle.models import lifecycle_models, lifecycle_rechecks, profile_stages, stage_history
from lifeloop.lifecycle.rechecks import next_recheck
from lifeloop.profiles import computed
from lifeloop.profiles.models import profiles
from lifeloop.store.engine import connect, transaction
from lifeloop.store.locks import RESOLUTION, lock_workspace
from lifeloop.store.schema import utcnow

ENTERED = "Lifecycle Stage Entered"
EXITED = "Lifecycle Stage Exited"


@dataclass(frozen=True, slots=True)
class StageChange:
    profile_id: int
    model: str
    from_stage: str | None
    to_stage: str | None
    reason: str


# --- models -------------------------------------------------------------------------------------
def install_model(
    conn: Connection, workspace_id: int, source: str, *, activate: bool = True
) -> dict[str, Any]:
    """Validate and store a new version of a model; with ``activate`` it becomes the workspace's model."""
    model = load_model(source)
    latest = conn.execute(
        select(func.max(lifecycle_models.c.version)).where(
            lifecycle_models.c.workspace_id == workspace_id, lifecycle_models.c.key == model.key
        )
    ).scalar()
    version = (latest or 0) + 1
    if activate:
        conn.execute(
            update(lifecycle_models)
            .where(lifecycle_models.c.workspace_id == workspace_id, lifecycle_models.c.active.is_(True))
            .values(active=False)
        )
    row_id = conn.execute(
        insert(lifecycle_models)
        .values(
            workspace_id=workspace_id,
            key=model.key,
            version=version,
            source=source,
            active=activate,
            created_at=utcnow(),
        )
        .returning(lifecycle_models.c.id)
    ).scalar_one()
    return {"id": row_id, "key": model.key, "version": version, "active": activate}


def install_preset(conn: Connection, workspace_id: int, key: str) -> dict[str, Any]:
    return install_model(conn, workspace_id, preset(key).source)


_parsed: dict[str, LifecycleModel] = {}  # YAML text → parsed model (rows never change)


def active_model(conn: Connection, workspace_id: int) -> LifecycleModel | None:
    row = conn.execute(
        select(lifecycle_models.c.id, lifecycle_models.c.source).where(
            lifecycle_models.c.workspace_id == workspace_id, lifecycle_models.c.active.is_(True)
        )
    ).first()
    if row is None:
        return None
    if row.source not in _parsed:
        _parsed[row.source] = load_model(row.source)
    return _parsed[row.source]


def list_models(conn: Connection, workspace_id: int) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(
            lifecycle_models.c.id,
            lifecycle_models.c.key,
            lifecycle_models.c.version,
            lifecycle_models.c.active,
            lifecycle_models.c.created_at,
        )
        .where(lifecycle_models.c.workspace_id == workspace_id)
        .order_by(lifecycle_models.c.key, lifecycle_models.c.version)
    )
    return [dict(r._mapping) for r in rows]


def require_active_model(conn: Connection, workspace_id: int) -> LifecycleModel:
    model = active_model(conn, workspace_id)
    if model is None:
        raise NotFound("this workspace has no active lifecycle model; install one (e.g. a preset) first")
    return model


# --- state --------------------------------------------------------------------------------------
def current_stages(
    conn: Connection, workspace_id: int, model: str, profile_ids: Sequence[int]
) -> dict[int, str]:
    if not profile_ids:
        return {}
    rows = conn.execute(
        select(profile_stages.c.profile_id, profile_stages.c.stage).where(
            profile_stages.c.workspace_id == workspace_id,
            profile_stages.c.model == model,
            profile_stages.c.profile_id.in_(profile_ids),
        )
    )
    return {r.profile_id: r.stage for r in rows}


def _emit(
    conn: Connection, workspace_id: int, profile_id: int, name: str, properties: dict, at: datetime, mid: str
) -> None:
    """An event lifeloop itself records on a profile, already placed (it needs no resolution)."""
    message = Message(
        type="track", message_id=mid, timestamp=at, received_at=at, event=name, properties=properties
    )
    ids = event_store.append_events(conn, workspace_id, None, [message])
    if ids:
        event_store.place_events(conn, workspace_id, [(ids[0], profile_id)])
        computed.apply_resolved_events(
            conn, workspace_id, [computed.ResolvedEvent(profile_id, "track", name, at, properties)]
        )


def _record(
    conn: Connection, workspace_id: int, model: LifecycleModel, change: StageChange, at: datetime
) -> None:
    pid = change.profile_id
    history_id = conn.execute(
        insert(stage_history)
        .values(
            workspace_id=workspace_id,
            profile_id=pid,
            model=model.key,
            from_stage=change.from_stage,
            to_stage=change.to_stage,
            reason=change.reason,
            at=at,
        )
        .returning(stage_history.c.id)
    ).scalar_one()
    where = (
        profile_stages.c.workspace_id == workspace_id,
        profile_stages.c.profile_id == pid,
        profile_stages.c.model == model.key,
    )
    conn.execute(delete(profile_stages).where(*where))
    if change.to_stage is not None:
        conn.execute(
            insert(profile_stages).values(
                workspace_id=workspace_id,
                profile_id=pid,
                model=model.key,
                stage=change.to_stage,
                entered_at=at,
            )
        )
    base = {"model": model.key, "reason": change.reason}
    if change.from_stage is not None:
        props = {**base, "stage": change.from_stage, "next_stage": change.to_stage}
        _emit(conn, workspace_id, pid, EXITED, props, at, f"lifecycle:{history_id}:exited")
    if change.to_stage is not None:
        props = {**base, "stage": change.to_stage, "previous_stage": change.from_stage}
        _emit(conn, workspace_id, pid, ENTERED, props, at, f"lifecycle:{history_id}:entered")
        emit = model.stage(change.to_stage).emit_on_enter
        if emit:
            _emit(conn, workspace_id, pid, emit, props, at, f"lifecycle:{history_id}:{emit}")


def _set_recheck(
    conn: Connection, workspace_id: int, model: str, profile_id: int, at: datetime | None
) -> None:
    where = (
        lifecycle_rechecks.c.workspace_id == workspace_id,
        lifecycle_rechecks.c.profile_id == profile_id,
        lifecycle_rechecks.c.model == model,
    )
    conn.execute(delete(lifecycle_rechecks).where(*where))
    if at is not None:
        conn.execute(
            insert(lifecycle_rechecks).values(
                workspace_id=workspace_id, profile_id=profile_id, model=model, recheck_at=at
            )
        )


def assign_stages(
    conn: Connection, workspace_id: int, profile_ids: Sequence[int], *, now: datetime, reason: str
) -> list[StageChange]:
    """Re-evaluate the active model for ``profile_ids`` (one at a time, O(each profile's data))."""
    model = active_model(conn, workspace_id)
    if model is None or not profile_ids:
        return []
    ids = sorted(set(profile_ids))
    before = current_stages(conn, workspace_id, model.key, ids)
    conditions = [stage.condition for stage in model.stages]
    changes: list[StageChange] = []
    for pid in ids:
        view = StoredProfile(conn, workspace_id, pid, now=now)
        stage = model.stage_for(view)
        to_stage = stage.key if stage else None
        if to_stage != before.get(pid):
            change = StageChange(pid, model.key, before.get(pid), to_stage, reason)
            _record(conn, workspace_id, model, change, now)
            changes.append(change)
        _set_recheck(
            conn, workspace_id, model.key, pid, next_recheck(conditions, view, conn, workspace_id, pid)
        )
    return changes


def forget_profile(conn: Connection, workspace_id: int, profile_id: int) -> None:
    """A profile merged away leaves every model; the survivor is re-evaluated by the caller."""
    for table in (profile_stages, lifecycle_rechecks):
        conn.execute(
            delete(table).where(table.c.workspace_id == workspace_id, table.c.profile_id == profile_id)
        )


def due_profiles(conn: Connection, workspace_id: int, model: str, now: datetime, *, limit: int) -> list[int]:
    rows = conn.execute(
        select(lifecycle_rechecks.c.profile_id)
        .where(
            lifecycle_rechecks.c.workspace_id == workspace_id,
            lifecycle_rechecks.c.model == model,
            lifecycle_rechecks.c.recheck_at <= now,
        )
        .order_by(lifecycle_rechecks.c.recheck_at)
        .limit(limit)
    )
    return [r[0] for r in rows]


def sweep(engine: Engine, workspace_id: int, *, now: datetime | None = None, batch_size: int = 500) -> int:
    """Apply time-only changes that are due; returns how many profiles were re-evaluated."""
    now = now or utcnow()
    total = 0
    while True:

        def work(conn: Connection) -> int:
            model = active_model(conn, workspace_id)
            if model is None:
                return 0
            due = due_profiles(conn, workspace_id, model.key, now, limit=batch_size)
            assign_stages(conn, workspace_id, due, now=now, reason="time")
            return len(due)

        done = transaction(engine, work)
        total += done
        if done < batch_size:
            return total


def workspaces_with_models(engine: Engine) -> list[int]:
    with connect(engine) as conn:
        query = select(lifecycle_models.c.workspace_id).where(lifecycle_models.c.active.is_(True))
        return [r[0] for r in conn.execute(query.execution_options(cross_workspace=True))]


def batch_stages(
    conn: Connection, workspace_id: int, model: LifecycleModel, *, now: datetime
) -> dict[int, str]:
    """Every live profile's stage, computed with one SQL query per stage (first match wins)."""
    assigned: dict[int, str] = {}
    for stage in model.stages:
        for pid in matching_profiles(conn, workspace_id, stage.condition, now=now):
            assigned.setdefault(pid, stage.key)
    return assigned


def recompute(
    engine: Engine,
    workspace_id: int,
    *,
    now: datetime | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    chunk_size: int = 1000,
) -> list[StageChange]:
    """Rebuild computed properties and stages of a workspace in batch; records and emits the changes.

    Stages come from the SQL back end; rechecks are then rebuilt per profile for the sweep.
    """
    now = now or utcnow()

    def rebuild_properties(conn: Connection) -> int:
        lock_workspace(conn, RESOLUTION, workspace_id)  # no event is placed while they are rebuilt
        return computed.recompute(conn, workspace_id)

    transaction(engine, rebuild_properties)
    with connect(engine) as conn:
        model = require_active_model(conn, workspace_id)
        target = batch_stages(conn, workspace_id, model, now=now)
        live = [
            r[0]
            for r in conn.execute(
                select(profiles.c.id).where(
                    profiles.c.workspace_id == workspace_id, profiles.c.merged_into.is_(None)
                )
            )
        ]
    conditions = [stage.condition for stage in model.stages]
    changes: list[StageChange] = []
    for start in range(0, len(live), chunk_size):
        chunk = live[start : start + chunk_size]

        def work(conn: Connection, chunk: list[int] = chunk) -> list[StageChange]:
            before = current_stages(conn, workspace_id, model.key, chunk)
            done: list[StageChange] = []
            for pid in chunk:
                if target.get(pid) != before.get(pid):
                    change = StageChange(pid, model.key, before.get(pid), target.get(pid), "recompute")
                    _record(conn, workspace_id, model, change, now)
                    done.append(change)
                view = StoredProfile(conn, workspace_id, pid, now=now)
                _set_recheck(
                    conn,
                    workspace_id,
                    model.key,
                    pid,
                    next_recheck(conditions, view, conn, workspace_id, pid),
                )
            return done

        changes += transaction(engine, work)
        if on_progress is not None:
            on_progress(len(chunk), len(live))
    return changes


def stage_distribution(conn: Connection, workspace_id: int) -> dict[str, int]:
    model = require_active_model(conn, workspace_id)
    rows = conn.execute(
        select(profile_stages.c.stage, func.count())
        .where(profile_stages.c.workspace_id == workspace_id, profile_stages.c.model == model.key)
        .group_by(profile_stages.c.stage)
    )
    counts = dict(rows.all())
    return {stage.key: int(counts.get(stage.key, 0)) for stage in model.stages}


def history(conn: Connection, workspace_id: int, profile_id: int) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(stage_history)
        .where(stage_history.c.workspace_id == workspace_id, stage_history.c.profile_id == profile_id)
        .order_by(stage_history.c.at, stage_history.c.id)
    )
    return [dict(r._mapping) for r in rows]
