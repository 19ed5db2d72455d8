"""Reads and writes of the event log, for the other domains to call."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import Connection, and_, bindparam, func, or_, select, update

from lifeloop.events.messages import Message
from lifeloop.events.models import events

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
_JSON_COLUMNS = ("properties", "traits", "context", "integrations", "extra")
_TIME_COLUMNS = ("timestamp", "original_timestamp", "sent_at", "received_at")
# SQLite allows 32,766 bound values per statement; stay well under it.
_SQLITE_ROWS_PER_STATEMENT = 800


def _json_text(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _sqlite_time(value: datetime | None) -> str | None:
    # The text form SQLAlchemy's SQLite DateTime writes and reads (naive UTC).
    return None if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def append_events(
    conn: Connection, workspace_id: int, source_id: int | None, messages: Sequence[Message]
) -> list[int]:
    """Append validated messages to the log; returns the ids of the rows stored.

    A message id already stored (a retry, or a concurrent duplicate) is skipped by the unique key.
    This is the ingest hot path: values are serialised once here and sent in one multi-row statement
    per chunk (SQLite) or as column arrays through ``unnest`` (PostgreSQL), bypassing per-value
    bind processing, which cost more than the insert itself.
    """
    if not messages:
        return []
    if conn.dialect.name == "postgresql":
        return _append_postgresql(conn, workspace_id, source_id, messages)
    return _append_sqlite(conn, workspace_id, source_id, messages)


def _append_sqlite(
    conn: Connection, workspace_id: int, source_id: int | None, messages: Sequence[Message]
) -> list[int]:
    ids: list[int] = []
    row_marks = "(" + ",".join("?" * len(_APPEND_COLUMNS)) + ")"
    for start in range(0, len(messages), _SQLITE_ROWS_PER_STATEMENT):
        chunk = messages[start : start + _SQLITE_ROWS_PER_STATEMENT]
        params: list[Any] = []
        for m in chunk:
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
                _sqlite_time(m.timestamp),
                _sqlite_time(m.original_timestamp),
                _sqlite_time(m.sent_at),
                _sqlite_time(m.received_at),
                _json_text(m.properties),
                _json_text(m.traits),
                _json_text(m.context),
                _json_text(m.integrations),
                _json_text(m.extra),
            )
        sql = (
            f"INSERT INTO events ({', '.join(_APPEND_COLUMNS)}) VALUES "
            + ",".join([row_marks] * len(chunk))
            + " ON CONFLICT (workspace_id, message_id) DO NOTHING RETURNING id"
        )
        ids += [row[0] for row in conn.exec_driver_sql(sql, tuple(params))]
    return ids


_PG_APPEND = (
    f"INSERT INTO events ({', '.join(_APPEND_COLUMNS)}) "
    "SELECT %s::bigint, %s::bigint, t.* FROM unnest("
    "%s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[], "
    "%s::timestamptz[], %s::timestamptz[], %s::timestamptz[], %s::timestamptz[], "
    "%s::jsonb[], %s::jsonb[], %s::jsonb[], %s::jsonb[], %s::jsonb[]) AS t "
    "ON CONFLICT (workspace_id, message_id) DO NOTHING RETURNING id"
)


def _append_postgresql(
    conn: Connection, workspace_id: int, source_id: int | None, messages: Sequence[Message]
) -> list[int]:
    # One constant statement with one array per column: psycopg prepares it once per connection.
    columns: list[list[Any]] = [[] for _ in range(17)]
    for m in messages:
        for column, value in zip(
            columns,
            (
                m.message_id,
                m.type,
                m.event,
                m.name,
                m.user_id,
                m.anonymous_id,
                m.group_id,
                m.previous_id,
                m.timestamp,
                m.original_timestamp,
                m.sent_at,
                m.received_at,
                _json_text(m.properties),
                _json_text(m.traits),
                _json_text(m.context),
                _json_text(m.integrations),
                _json_text(m.extra),
            ),
            strict=True,
        ):
            column.append(value)
    rows = conn.exec_driver_sql(_PG_APPEND, (workspace_id, source_id, *columns))
    return [row[0] for row in rows]


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
