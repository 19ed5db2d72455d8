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
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Table, delete, insert, select

from lifeloop.events import store as event_store
from lifeloop.events.messages import Message
from lifeloop.events.models import events
from lifeloop.lifecycle.definition import LifecycleModel
from lifeloop.lifecycle.models import lifecycle_rechecks, profile_stages, stage_history
from lifeloop.profiles import computed

ENTERED = "Lifecycle Stage Entered"
EXITED = "Lifecycle Stage Exited"
_SQLITE_VARIABLES = 30_000  # SQLite allows 32,766 bound values per statement
_IN_CHUNK = 900


@dataclass(frozen=True, slots=True)
class StageChange:
    profile_id: int
    model: str
    from_stage: str | None
    to_stage: str | None
    reason: str


def _sqlite_value(value: Any) -> Any:
    # The text SQLAlchemy's SQLite DateTime writes (naive UTC), so rows read back like any other.
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    return value


def insert_rows(
    conn: Connection,
    table: Table,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    returning: str = "",
) -> list[Any]:
    """Insert ``rows`` (tuples in ``columns`` order) as multi-row statements; RETURNING rows if asked.

    SQLite gets pre-serialised values in one driver statement per chunk (SQLAlchemy's per-value bind
    processing would cost more than the insert); PostgreSQL gets SQLAlchemy's batched executemany.
    """
    if not rows:
        return []
    if conn.dialect.name != "sqlite":
        statement: Any = insert(table)
        if returning:
            statement = statement.returning(
                *(table.c[c.strip()] for c in returning.split(",")), sort_by_parameter_order=True
            )
        result = conn.execute(statement, [dict(zip(columns, row, strict=True)) for row in rows])
        return list(result) if returning else []
    per_statement = max(1, _SQLITE_VARIABLES // len(columns))
    marks = "(" + ",".join("?" * len(columns)) + ")"
    out: list[Any] = []
    for start in range(0, len(rows), per_statement):
        chunk = rows[start : start + per_statement]
        sql = f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES " + ",".join([marks] * len(chunk))
        if returning:
            sql += f" RETURNING {returning}"
        params = tuple(_sqlite_value(v) for row in chunk for v in row)
        result = conn.exec_driver_sql(sql, params)
        if returning:
            out += result.all()
    return out


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


def _emit(conn: Connection, workspace_id: int, owners: dict[str, int], messages: list[Message]) -> None:
    """Events lifeloop itself records on profiles, placed at once (they need no identity resolution)."""
    ids = event_store.append_events(conn, workspace_id, None, messages)
    if not ids:
        return
    # Which stored id is which message: read back by id range (a primary-key scan, no long IN list).
    stored = set(ids)
    by_mid = {m.message_id: m for m in messages}
    rows = conn.execute(
        select(events.c.id, events.c.message_id).where(
            events.c.workspace_id == workspace_id, events.c.id >= min(ids), events.c.id <= max(ids)
        )
    )
    placed = [(r.id, by_mid[r.message_id]) for r in rows if r.id in stored and r.message_id in by_mid]
    event_store.place_events(conn, workspace_id, [(eid, owners[m.message_id]) for eid, m in placed])
    resolved = [
        computed.ResolvedEvent(owners[m.message_id], "track", m.event, m.timestamp, m.properties)
        for _eid, m in placed
    ]
    computed.apply_resolved_events(conn, workspace_id, resolved)


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
    pids = [c.profile_id for c in changes]
    for start in range(0, len(pids), _IN_CHUNK):
        conn.execute(
            delete(profile_stages).where(
                profile_stages.c.workspace_id == workspace_id,
                profile_stages.c.model == model.key,
                profile_stages.c.profile_id.in_(pids[start : start + _IN_CHUNK]),
            )
        )
    entered = [(workspace_id, c.profile_id, model.key, c.to_stage, at) for c in changes if c.to_stage]
    insert_rows(conn, profile_stages, ("workspace_id", "profile_id", "model", "stage", "entered_at"), entered)
    messages: list[Message] = []
    owners: dict[str, int] = {}
    for change in changes:
        for message in _emitted(model, change, history_ids[change.profile_id], at):
            messages.append(message)
            owners[message.message_id] = change.profile_id
    _emit(conn, workspace_id, owners, messages)


def replace_rechecks(
    conn: Connection,
    workspace_id: int,
    model: str,
    times: Sequence[tuple[int, datetime]],
    *,
    profile_ids: Sequence[int] | None = None,
    id_range: tuple[int, int] | None = None,
) -> None:
    """Set the recheck times of the profiles in ``profile_ids`` or ``id_range`` (inclusive) to ``times``;
    a profile of the range without a time has nothing to wait for and loses its recheck."""
    r = lifecycle_rechecks.c
    scope = (r.workspace_id == workspace_id, r.model == model)
    if id_range is not None:
        conn.execute(
            delete(lifecycle_rechecks).where(*scope, r.profile_id >= id_range[0], r.profile_id <= id_range[1])
        )
    for start in range(0, len(profile_ids or ()), _IN_CHUNK):
        chunk = list(profile_ids or ())[start : start + _IN_CHUNK]
        conn.execute(delete(lifecycle_rechecks).where(*scope, r.profile_id.in_(chunk)))
    rows = [(workspace_id, pid, model, at) for pid, at in times]
    insert_rows(conn, lifecycle_rechecks, ("workspace_id", "profile_id", "model", "recheck_at"), rows)
