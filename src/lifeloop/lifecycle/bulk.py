"""Writing many stage changes and recheck times at once: the batch half of ``lifecycle.service``.

A change is written as one history row, the profile's current stage, and its events
(``Lifecycle Stage Exited`` / ``Lifecycle Stage Entered`` / the stage's ``on_enter`` event). Here every
part goes to the database as a few multi-row statements per batch of changes instead of a handful of
statements per profile, so a recompute that moves a million profiles costs seconds, not hours. The
real-time path records its (few) changes through the same function, so both write the same rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from lifeloop.events.messages import Message
from lifeloop.events.own import record_own_events
from lifeloop.lifecycle.definition import LifecycleModel
from lifeloop.lifecycle.models import lifecycle_rechecks, profile_stages, stage_history
from lifeloop.store.rows import delete_in, insert_rows

ENTERED = "Lifecycle Stage Entered"
EXITED = "Lifecycle Stage Exited"


@dataclass(frozen=True, slots=True)
class StageChange:
    profile_id: int
    model: str
    from_stage: str | None
    to_stage: str | None
    reason: str


def _emitted(model: LifecycleModel, change: StageChange, history_id: int, at: datetime) -> list[Message]:
    base = {"model": model.key, "reason": change.reason}
    out: list[Message] = []

    def message(name: str, props: dict[str, Any], suffix: str) -> None:
        mid = f"lifecycle:{history_id}:{suffix}"
        out.append(
            Message(type="track", message_id=mid, timestamp=at, received_at=at, event=name, properties=props)
        )

    if change.from_stage is not None:
        message(EXITED, {**base, "stage": change.from_stage, "next_stage": change.to_stage}, "exited")
    if change.to_stage is not None:
        props = {**base, "stage": change.to_stage, "previous_stage": change.from_stage}
        message(ENTERED, props, "entered")
        emit = model.stage(change.to_stage).emit_on_enter
        if emit:
            message(emit, props, emit)
    return out


def record_changes(
    conn: Connection, workspace_id: int, model: LifecycleModel, changes: Sequence[StageChange], at: datetime
) -> None:
    """Write history, current stages and stage events for ``changes`` (at most one per profile)."""
    if not changes:
        return
    columns = ("workspace_id", "profile_id", "model", "from_stage", "to_stage", "reason", "at")
    rows = [(workspace_id, c.profile_id, model.key, c.from_stage, c.to_stage, c.reason, at) for c in changes]
    history_ids = dict(
        (pid, hid) for hid, pid in insert_rows(conn, stage_history, columns, rows, returning="id, profile_id")
    )
    s = profile_stages.c
    pids = [c.profile_id for c in changes]
    delete_in(conn, profile_stages, "profile_id", pids, s.workspace_id == workspace_id, s.model == model.key)
    entered = [(workspace_id, c.profile_id, model.key, c.to_stage, at) for c in changes if c.to_stage]
    insert_rows(conn, profile_stages, ("workspace_id", "profile_id", "model", "stage", "entered_at"), entered)
    emitted = [
        (change.profile_id, message)
        for change in changes
        for message in _emitted(model, change, history_ids[change.profile_id], at)
    ]
    record_own_events(conn, workspace_id, emitted)


def replace_rechecks(
    conn: Connection,
    workspace_id: int,
    model: str,
    times: Sequence[tuple[int, datetime]],
    *,
    profile_ids: Sequence[int],
) -> None:
    """Set the recheck times of ``profile_ids`` to ``times``; a profile without a time has nothing to wait
    for and loses its recheck."""
    r = lifecycle_rechecks.c
    delete_in(
        conn,
        lifecycle_rechecks,
        "profile_id",
        list(profile_ids),
        r.workspace_id == workspace_id,
        r.model == model,
    )
    rows = [(workspace_id, pid, model, at) for pid, at in times]
    insert_rows(conn, lifecycle_rechecks, ("workspace_id", "profile_id", "model", "recheck_at"), rows)
