"""Reads and writes of the event log, for the other domains to call."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Connection, and_, bindparam, func, or_, select, update

from lifeloop.events.messages import Message
from lifeloop.events.models import events
from lifeloop.store.schema import sqlite_time

# Columns written by ingest, in order; profile_id stays NULL until the resolver places the event.
_APPEND_COLUMNS = (
    "workspace_id",
    "source_id",
    "message_id",
    "type",
    "event",
    "name",
    "user_id",
    "anonymous_id",
    "group_id",
    "previous_id",
    "timestamp",
    "original_timestamp",
    "sent_at",
    "received_at",
    "properties",
    "traits",
    "context",
    "integrations",
    "extra",
)
# SQLite allows 32,766 bound values per statement; stay well under it.
_SQLITE_ROWS_PER_STATEMENT = 800


def append_events(
    conn: Connection, workspace_id: int, source_id: int | None, messages: Sequence[Message]
) -> list[int]:
    """Append validated messages to the log; returns the ids of the rows stored.

    A message id already stored (a retry, or a concurrent duplicate) is skipped by the unique key.
    This is the ingest hot path: values are serialised once here and sent in one multi-row statement
    per chunk (SQLite) or as one JSON document unpacked by ``json_to_recordset`` (PostgreSQL),
    bypassing per-value bind processing, which cost more than the insert itself.
    """
    if not messages:
        return []
    if conn.dialect.name == "postgresql":
        return _append_postgresql(conn, workspace_id, source_id, messages)
    ids: list[int] = []
    _append_sqlite(conn, workspace_id, source_id, messages, ids)
    return ids


def append_placed_events(
    conn: Connection, workspace_id: int, items: Sequence[tuple[int, Message]]
) -> list[tuple[int, Message]]:
    """Append ``(profile id, message)`` pairs already on their profiles (lifeloop's own events: nothing to
    resolve), in the statement that stores them; returns the pairs stored (a message id already stored
    is skipped)."""
    if not items:
        return []
    messages, profile_ids = [m for _, m in items], [pid for pid, _ in items]
    stored: list[str] = []
    if conn.dialect.name == "postgresql":
        stored = _append_postgresql(conn, workspace_id, None, messages, profile_ids)
    else:
        _append_sqlite(conn, workspace_id, None, messages, stored, profile_ids)
    kept = set(stored)
    return [(pid, m) for pid, m in items if m.message_id in kept]


def append_events_counted(
    conn: Connection, workspace_id: int, source_id: int | None, messages: Sequence[Message]
) -> int:
    """``append_events`` returning only how many rows were stored, for callers that need no ids.

    On SQLite this skips ``RETURNING``: each returned row is one more step of the statement, and the
    driver lets go of the GIL around every step, so a busy thread of the process (the resolver) could
    take it each time. One step per statement instead.
    """
    if not messages:
        return 0
    if conn.dialect.name == "postgresql":
        return len(_append_postgresql(conn, workspace_id, source_id, messages))
    return _append_sqlite(conn, workspace_id, source_id, messages, None)


def _append_sqlite(
    conn: Connection,
    workspace_id: int,
    source_id: int | None,
    messages: Sequence[Message],
    ids: list[Any] | None,
    profile_ids: Sequence[int] | None = None,
) -> int:
    """Insert ``messages`` (on ``profile_ids`` when given); the new ids go to ``ids`` unless it is None
    (their message ids when placed). Returns how many were stored."""
    stored = 0
    columns = _APPEND_COLUMNS + (("profile_id",) if profile_ids is not None else ())
    returning = "" if ids is None else " RETURNING message_id" if profile_ids is not None else " RETURNING id"
    row_marks = "(" + ",".join("?" * len(columns)) + ")"
    # A batch shares its receive time, and timestamp is original_timestamp unless the clock was
    # corrected: format each distinct time once (formatting cost more than the insert's Python side).
    times: dict[datetime | None, str | None] = {None: None}

    def text_of(value: datetime | None) -> str | None:
        if value not in times:
            times[value] = None if value is None else sqlite_time(value)
        return times[value]

    for start in range(0, len(messages), _SQLITE_ROWS_PER_STATEMENT):
        chunk = messages[start : start + _SQLITE_ROWS_PER_STATEMENT]
        params: list[Any] = []
        for n, m in enumerate(chunk, start):
            params += (
                workspace_id,
                source_id,
                m.message_id,
                m.type,
                m.event,
                m.name,
                m.user_id,
                m.anonymous_id,
                m.group_id,
                m.previous_id,
                text_of(m.timestamp),
                text_of(m.original_timestamp),
                text_of(m.sent_at),
                text_of(m.received_at),
                None if m.properties is None else orjson.dumps(m.properties).decode(),
                None if m.traits is None else orjson.dumps(m.traits).decode(),
                None if m.context is None else orjson.dumps(m.context).decode(),
                None if m.integrations is None else orjson.dumps(m.integrations).decode(),
                None if m.extra is None else orjson.dumps(m.extra).decode(),
            )
            if profile_ids is not None:
                params.append(profile_ids[n])
        sql = (
            f"INSERT INTO events ({', '.join(columns)}) VALUES "
            + ",".join([row_marks] * len(chunk))
            + " ON CONFLICT (workspace_id, message_id) DO NOTHING"
            + returning
        )
        # The DB-API cursor of the connection's transaction: a result object per statement cost more
        # than binding the values.
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(sql, params)
            if ids is None:
                stored += cursor.rowcount  # rows inserted; conflicts skipped by DO NOTHING are not counted
            else:
                new = [row[0] for row in cursor.fetchall()]
                ids += new
                stored += len(new)
        finally:
            cursor.close()
    return stored


# One constant statement (psycopg prepares it once per connection) taking the rows as one JSON array:
# orjson writes it in one call (times as RFC 3339, the JSON columns as they are) and PostgreSQL unpacks
# it in C. Array parameters instead (``unnest``) made psycopg escape every element in Python, which
# cost more than the insert. A JSON null is SQL NULL in json_to_recordset, as it was before.
_RECORD = (
    "FROM json_to_recordset(%s::json) AS t(m text, ty text, e text, n text, u text, a text, g text, "
    "pv text, ts timestamptz, ot timestamptz, sa timestamptz, ra timestamptz, "
    "p jsonb, tr jsonb, c jsonb, i jsonb, x jsonb{placed}) "
)
_VALUES = "t.m, t.ty, t.e, t.n, t.u, t.a, t.g, t.pv, t.ts, t.ot, t.sa, t.ra, t.p, t.tr, t.c, t.i, t.x"
_PG_APPEND = (
    f"INSERT INTO events ({', '.join(_APPEND_COLUMNS)}) SELECT %s::bigint, %s::bigint, {_VALUES} "
    + _RECORD.format(placed="")
    + "ON CONFLICT (workspace_id, message_id) DO NOTHING RETURNING id"
)
# The same for events already on their profiles (``pid``), returning the message ids stored.
_PG_APPEND_PLACED = (
    f"INSERT INTO events ({', '.join(_APPEND_COLUMNS)}, profile_id) "
    f"SELECT %s::bigint, %s::bigint, {_VALUES}, t.pid "
    + _RECORD.format(placed=", pid bigint")
    + "ON CONFLICT (workspace_id, message_id) DO NOTHING RETURNING message_id"
)


def _append_postgresql(
    conn: Connection,
    workspace_id: int,
    source_id: int | None,
    messages: Sequence[Message],
    profile_ids: Sequence[int] | None = None,
) -> list[Any]:
    """Insert ``messages`` (on ``profile_ids`` when given); returns the new ids (their message ids when
    placed)."""
    rows: list[dict[str, Any]] = [
        {
            "m": m.message_id,
            "ty": m.type,
            "e": m.event,
            "n": m.name,
            "u": m.user_id,
            "a": m.anonymous_id,
            "g": m.group_id,
            "pv": m.previous_id,
            "ts": m.timestamp,
            "ot": m.original_timestamp,
            "sa": m.sent_at,
            "ra": m.received_at,
            "p": m.properties,
            "tr": m.traits,
            "c": m.context,
            "i": m.integrations,
            "x": m.extra,
        }
        for m in messages
    ]
    statement = _PG_APPEND
    if profile_ids is not None:
        statement = _PG_APPEND_PLACED
        for row, pid in zip(rows, profile_ids, strict=True):
            row["pid"] = pid
    stored = conn.exec_driver_sql(statement, (workspace_id, source_id, orjson.dumps(rows).decode()))
    return [row[0] for row in stored]


def unresolved_events(conn: Connection, workspace_id: int, *, limit: int) -> list[Any]:
    """The oldest events still waiting for a profile, in arrival order."""
    return list(
        conn.execute(
            select(events)
            .where(events.c.workspace_id == workspace_id, events.c.profile_id.is_(None))
            .order_by(events.c.id)
            .limit(limit)
        )
    )


def workspaces_with_unresolved_events(conn: Connection) -> list[int]:
    query = (
        select(events.c.workspace_id)
        .where(events.c.profile_id.is_(None))
        .distinct()
        .execution_options(cross_workspace=True)
    )
    return [r[0] for r in conn.execute(query)]


def oldest_unresolved_received_at(conn: Connection, workspace_id: int) -> datetime | None:
    """When the longest-waiting event of a workspace arrived (a seek on the unresolved index)."""
    query = (
        select(events.c.received_at)
        .where(events.c.workspace_id == workspace_id, events.c.profile_id.is_(None))
        .order_by(events.c.id)
        .limit(1)
    )
    return conn.execute(query).scalar_one_or_none()


def count_unresolved(conn: Connection, workspace_id: int) -> int:
    query = select(func.count()).where(events.c.workspace_id == workspace_id, events.c.profile_id.is_(None))
    return int(conn.execute(query).scalar_one())


def place_events(conn: Connection, workspace_id: int, placements: Sequence[tuple[int, int]]) -> None:
    """Set the profile of resolved events: ``placements`` are (event id, profile id)."""
    if not placements:
        return
    if conn.dialect.name == "postgresql":  # one statement instead of one round trip per event
        event_ids, profile_ids = zip(*placements, strict=True)
        conn.exec_driver_sql(
            "UPDATE events SET profile_id = placed.profile_id "
            "FROM unnest(%s::bigint[], %s::bigint[]) AS placed(id, profile_id) "
            "WHERE events.workspace_id = %s AND events.id = placed.id",
            (list(event_ids), list(profile_ids), workspace_id),
        )
        return
    conn.execute(
        update(events)
        .where(events.c.workspace_id == workspace_id, events.c.id == bindparam("b_id"))
        .values(profile_id=bindparam("b_profile")),
        [{"b_id": event_id, "b_profile": profile_id} for event_id, profile_id in placements],
    )


def move_events(conn: Connection, workspace_id: int, *, from_profile: int, to_profile: int) -> int:
    """Re-point a merged profile's events to the profile it merged into; returns how many moved."""
    result = conn.execute(
        update(events)
        .where(events.c.workspace_id == workspace_id, events.c.profile_id == from_profile)
        .values(profile_id=to_profile)
    )
    return result.rowcount


def timeline(
    conn: Connection,
    workspace_id: int,
    profile_id: int,
    *,
    limit: int,
    before: tuple[datetime, int] | None = None,
    event_name: str | None = None,
) -> list[dict[str, Any]]:
    """A profile's events, newest first, keyset-paginated by (timestamp, id)."""
    query = select(events).where(events.c.workspace_id == workspace_id, events.c.profile_id == profile_id)
    if event_name is not None:
        query = query.where(events.c.event == event_name)
    if before is not None:
        ts, event_id = before
        query = query.where(
            or_(events.c.timestamp < ts, and_(events.c.timestamp == ts, events.c.id < event_id))
        )
    query = query.order_by(events.c.timestamp.desc(), events.c.id.desc()).limit(limit)
    return [dict(r._mapping) for r in conn.execute(query)]


def count_events(conn: Connection, workspace_id: int, profile_id: int | None = None) -> int:
    query = select(func.count()).select_from(events).where(events.c.workspace_id == workspace_id)
    if profile_id is not None:
        query = query.where(events.c.profile_id == profile_id)
    return int(conn.execute(query).scalar_one())


def events_between(
    conn: Connection, workspace_id: int, since: datetime, until: datetime, names: Sequence[str]
) -> list[Any]:
    """Placed track events with these names in (since, until], in time order (journeys' dry runs)."""
    query = (
        select(
            events.c.profile_id, events.c.event, events.c.properties, events.c.timestamp, events.c.message_id
        )
        .where(
            events.c.workspace_id == workspace_id,
            events.c.profile_id.is_not(None),
            events.c.type == "track",
            events.c.event.in_(sorted(set(names))),
            events.c.timestamp > since,
            events.c.timestamp <= until,
        )
        .order_by(events.c.timestamp, events.c.id)
    )
    return list(conn.execute(query))
