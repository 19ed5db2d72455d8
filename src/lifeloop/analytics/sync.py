"""Incremental sync from the operational database (SQLite or PostgreSQL) into the DuckDB store.

Per workspace, events are read in id order after the stored cursor, flattened, and appended together
with the new cursor and their fold into the per-profile rollups (``lifeloop.analytics.rollups``) in ONE
DuckDB transaction: a crash between chunks loses nothing and a rerun copies nothing twice (the primary key
on ``events.id`` is a second guard; only rows it lets in are folded).

Only resolved events are copied (``profile_id IS NOT NULL``), and the cursor never passes the lowest
still-unresolved id of the workspace, so an event that the resolver places later is never skipped.
Profiles are then refreshed into ``profile_map`` by ``updated_at`` (a merge touches the loser's
``updated_at``), so metrics count the surviving profile without rewriting events.

Flattening rules (documented in docs/analytics.md):

- ``event``: the track event name; ``Page Viewed`` / ``Screen Viewed`` for page / screen calls; else the type.
- ``interactive``: a track, page or screen call that is not one of lifeloop's own events (SYSTEM_EVENTS).
- ``revenue``: on ``Order Completed`` only, the first of ``properties.revenue``, ``.total``, ``.value``
  that is a number or a numeric string.
- ``channel``: the first non-empty of ``context.campaign.source``, ``context.channel``,
  ``properties.channel``, stripped and lower-cased.
- ``day``: the calendar day of the event in the workspace's time zone.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import duckdb
import orjson
import pandas as pd
from sqlalchemy import Engine, func, select

from lifeloop.analytics import rollups
from lifeloop.analytics.rollups import append_events
from lifeloop.analytics.state_copy import sync_state_copy
from lifeloop.analytics.store import open_store
from lifeloop.analytics.streams import read_stream, save_stream
from lifeloop.events.models import events
from lifeloop.profiles.computed import NON_INTERACTION_EVENTS
from lifeloop.profiles.models import profiles
from lifeloop.store.engine import connect
from lifeloop.store.identity import database_id
from lifeloop.store.rows import fetch_tuples, json_text, time_value
from lifeloop.store.state_log import SOURCES
from lifeloop.workspaces.models import workspaces

log = logging.getLogger(__name__)

# Events lifeloop emits itself never count as the user's interaction (docs/presets.md); the same set as the
# profiles' computed properties use, plus the journey engine's own events.
SYSTEM_EVENTS = NON_INTERACTION_EVENTS
INTERACTIVE_TYPES = frozenset({"track", "page", "screen"})
REVENUE_KEYS = ("revenue", "total", "value")
# Profiles committed out of updated_at order (a long transaction) are caught by re-reading this far back.
PROFILE_OVERLAP = timedelta(minutes=10)
DEFAULT_SETTLE_SECONDS = 10.0

EVENT_COLUMNS = [
    "id",
    "workspace_id",
    "profile_id",
    "type",
    "event",
    "name",
    "category",
    "ts",
    "day",
    "interactive",
    "revenue",
    "channel",
    "stage",
    "previous_stage",
    "lifecycle_model",
    "journey_id",
    "journey_group",
    "segment",
    "properties",
]

Progress = Callable[[int, int], None]  # (rows just copied, rows still to copy at the start)


@dataclass
class SyncReport:
    events: int = 0
    profiles: int = 0
    state_profiles: int = 0  # profiles whose stored state was re-read for the state copy
    chunks: int = 0
    workspaces: list[int] = field(default_factory=list)
    # Per workspace: the first event id still waiting for identity resolution (sync stops before it).
    waiting_at: dict[int, int] = field(default_factory=dict)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip().replace(",", ""))
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def revenue_of(event: str | None, properties: dict[str, Any] | None) -> float | None:
    """The order value of an ``Order Completed`` event, or None."""
    if event != "Order Completed" or not isinstance(properties, dict):
        return None
    for key in REVENUE_KEYS:
        number = _number(properties.get(key))
        if number is not None:
            return number
    return None


def channel_of(context: dict[str, Any] | None, properties: dict[str, Any] | None) -> str | None:
    """The acquisition / traffic channel an event names, by the documented precedence."""
    context = context if isinstance(context, dict) else {}
    properties = properties if isinstance(properties, dict) else {}
    campaign = context.get("campaign")
    candidates = (
        campaign.get("source") if isinstance(campaign, dict) else None,
        context.get("channel"),
        properties.get("channel"),
    )
    for value in candidates:
        if isinstance(value, str) and value.strip():
            return value.strip().lower()
    return None


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, dict | list):
        return None
    return str(value)


def event_name(kind: str, event: str | None) -> str:
    if kind == "track" and event:
        return event
    return {"page": "Page Viewed", "screen": "Screen Viewed"}.get(kind, kind)


def _document(value: Any) -> Any:
    """A JSON column as read: its text, decoded here (or the value, from a driver that decodes JSON)."""
    return orjson.loads(value) if isinstance(value, str | bytes) else value


def _channel_of(context: Any, properties: dict[str, Any]) -> str | None:
    # A context that names neither key (most of them: user agents, IPs…) is not decoded at all.
    if isinstance(context, str) and "channel" not in context and "campaign" not in context:
        context = None
    return channel_of(_document(context), properties)


def _columns(rows: Sequence[Sequence[Any]], width: int) -> list[list[Any]]:
    """``rows`` of ``width`` values as ``width`` lists, one per column."""
    return [list(column) for column in zip(*rows, strict=True)] if rows else [[] for _ in range(width)]


def flatten(rows: Sequence[Sequence[Any]], tz: ZoneInfo) -> pd.DataFrame:
    """Operational event rows → the analytics ``events`` columns.

    A row is (id, workspace_id, profile_id, type, event, name, timestamp, properties, context), as the
    driver reads them: times as text on SQLite, JSON as text. Times and days are converted for the whole
    chunk at once; only the properties (and contexts that may name a channel) are read row by row."""
    ids, workspace_ids, profile_ids, kinds, events_, names, times, documents, contexts = _columns(rows, 9)
    derived: list[tuple[Any, ...]] = []
    for kind, event, document, context in zip(kinds, events_, documents, contexts, strict=True):
        props = _document(document)
        props = props if isinstance(props, dict) else {}
        name = event_name(kind, event)
        derived.append(
            (
                name,
                _text(props.get("category")),
                kind in INTERACTIVE_TYPES and name not in SYSTEM_EVENTS and not name.startswith("$"),
                revenue_of(name, props),
                _channel_of(context, props),
                _text(props.get("stage")),
                _text(props.get("previous_stage")),
                _text(props.get("model")),
                _text(props.get("journey_id")),
                _text(props.get("group")),
                _text(props.get("segment")),
                orjson.dumps(props).decode() if props else None,
            )
        )
    at = pd.to_datetime(pd.Series(times, dtype=object), utc=True, format="ISO8601")
    (
        event_names,
        category,
        interactive,
        revenue,
        channel,
        stage,
        previous_stage,
        model,
        journey,
        group,
        segment,
        properties,
    ) = _columns(derived, 12)
    columns = {
        "id": ids,
        "workspace_id": workspace_ids,
        "profile_id": profile_ids,
        "type": kinds,
        "event": event_names,
        "name": names,
        "category": category,
        "ts": at.dt.tz_localize(None),
        "day": at.dt.tz_convert(tz).dt.date,
        "interactive": pd.Series(interactive, dtype=bool),
        "revenue": pd.Series(revenue, dtype="float64"),
        "channel": channel,
        "stage": stage,
        "previous_stage": previous_stage,
        "lifecycle_model": model,
        "journey_id": journey,
        "journey_group": group,
        "segment": segment,
        "properties": properties,
    }
    assert list(columns) == EVENT_COLUMNS
    return pd.DataFrame(columns)


def _workspace_zones(engine: Engine, workspace_id: int | None) -> dict[int, ZoneInfo]:
    query = select(workspaces.c.id, workspaces.c.timezone).order_by(workspaces.c.id)
    if workspace_id is not None:
        query = query.where(workspaces.c.id == workspace_id)
    with connect(engine) as conn:
        rows = conn.execute(query).all()
    return {r.id: ZoneInfo(r.timezone or "UTC") for r in rows}


def _sync_events(
    engine: Engine,
    con: duckdb.DuckDBPyConnection,
    workspace_id: int,
    tz: ZoneInfo,
    chunk_size: int,
    settle: timedelta,
    report: SyncReport,
    progress: Progress | None,
) -> None:
    ev = events.c
    cursor = read_stream(con, workspace_id, "events")[0] or 0
    with connect(engine) as conn:
        # Unresolved events are rare and indexed (ix_events_unresolved); sync stops just before the first.
        waiting = conn.execute(
            select(func.min(ev.id)).where(
                ev.workspace_id == workspace_id, ev.id > cursor, ev.profile_id.is_(None)
            )
        ).scalar()
        if settle > timedelta(0):
            # On PostgreSQL a transaction still in flight may commit a lower id than rows we can already
            # see; stopping before events received in the last `settle` leaves it time to commit first.
            recent = conn.execute(
                select(func.min(ev.id)).where(
                    ev.workspace_id == workspace_id,
                    ev.id > cursor,
                    ev.received_at > datetime.now(UTC) - settle,
                )
            ).scalar()
            if recent is not None and (waiting is None or recent < waiting):
                waiting = recent
        bound = [ev.id < waiting] if waiting is not None else []
        remaining = conn.execute(
            select(func.count()).where(ev.workspace_id == workspace_id, ev.id > cursor, *bound)
        ).scalar_one()
    if waiting is not None:
        report.waiting_at[workspace_id] = waiting
    while remaining > 0:
        with connect(engine) as conn:
            # Read raw (times as the driver gives them, JSON as text): ``flatten`` converts the chunk.
            columns = [ev.id, ev.workspace_id, ev.profile_id, ev.type, ev.event, ev.name]
            columns += [time_value(conn, ev.timestamp), json_text(conn, ev.properties)]
            columns.append(json_text(conn, ev.context))
            rows = fetch_tuples(
                conn,
                select(*columns)
                .where(ev.workspace_id == workspace_id, ev.id > cursor, *bound)
                .order_by(ev.id)
                .limit(chunk_size),
            )
        if not rows:
            break
        frame = flatten(rows, tz)
        con.begin()
        try:
            con.register("chunk", frame)
            append_events(con, "chunk")  # the events and their rollups, in this transaction
            con.unregister("chunk")
            cursor = int(frame["id"].iloc[-1])
            save_stream(con, workspace_id, "events", cursor=cursor)
            con.commit()
        except BaseException:
            con.rollback()
            raise
        report.events += len(rows)
        report.chunks += 1
        remaining -= len(rows)
        if progress is not None:
            progress(len(rows), remaining)
        if len(rows) < chunk_size:
            break


def _sync_profiles(
    engine: Engine, con: duckdb.DuckDBPyConnection, workspace_id: int, chunk_size: int, report: SyncReport
) -> None:
    pr = profiles.c
    _, watermark = read_stream(con, workspace_id, "profiles")
    since = (watermark.replace(tzinfo=UTC) - PROFILE_OVERLAP) if watermark else None
    after_id = 0
    newest = watermark.replace(tzinfo=UTC) if watermark else None
    while True:
        query = (
            select(pr.id, pr.merged_into, pr.updated_at)
            .where(pr.workspace_id == workspace_id, pr.id > after_id)
            .order_by(pr.id)
            .limit(chunk_size)
        )
        if since is not None:
            query = query.where(pr.updated_at >= since)
        with connect(engine) as conn:
            rows = conn.execute(query).all()
        if not rows:
            break
        frame = pd.DataFrame(
            {
                "workspace_id": workspace_id,
                "profile_id": [r.id for r in rows],
                "canonical_id": [r.merged_into if r.merged_into is not None else r.id for r in rows],
                "updated_at": [r.updated_at.astimezone(UTC).replace(tzinfo=None) for r in rows],
            }
        )
        chunk_newest = max(r.updated_at for r in rows)
        newest = chunk_newest if newest is None else max(newest, chunk_newest)
        con.begin()
        try:
            con.register("chunk", frame)
            con.execute(
                """
                INSERT INTO profile_map SELECT workspace_id, profile_id, canonical_id, updated_at FROM chunk
                ON CONFLICT (workspace_id, profile_id) DO UPDATE
                SET canonical_id = excluded.canonical_id, updated_at = excluded.updated_at
                """
            )
            con.unregister("chunk")
            con.commit()
        except BaseException:
            con.rollback()
            raise
        report.profiles += len(rows)
        after_id = rows[-1].id
    con.begin()
    try:
        # Collapse chains (a → b, b → c) that a merge of a merge winner leaves; merges are rarely deep.
        for _ in range(32):
            changed = con.execute(
                """
                UPDATE profile_map SET canonical_id = t.canonical_id
                FROM profile_map t
                WHERE profile_map.workspace_id = ? AND t.workspace_id = profile_map.workspace_id
                  AND t.profile_id = profile_map.canonical_id AND t.canonical_id <> profile_map.canonical_id
                  AND profile_map.profile_id <> profile_map.canonical_id
                """,
                [workspace_id],
            ).fetchone()
            if not changed or not changed[0]:
                break
        if newest is not None:
            save_stream(con, workspace_id, "profiles", watermark=newest.astimezone(UTC).replace(tzinfo=None))
        con.commit()
    except BaseException:
        con.rollback()
        raise


# What the store copies from the operational database (everything but the operators' channel costs).
COPIED_TABLES = (
    "events",
    "profile_map",
    "sync_state",
    "rfm_scores",
    *rollups.TABLES,
    *(f"state_{source.name}" for source in SOURCES),
)


def _forget_another_databases_copy(engine: Engine, con: duckdb.DuckDBPyConnection) -> None:
    """Empty the copy when it is not of this database, so that the sync copies this one afresh: it was made
    from another database (``store.identity``: a deleted and recreated SQLite file, another environment's
    file), or it holds events past this database's last one (an older backup restored)."""
    held = con.execute("SELECT value FROM store_meta WHERE key = 'source_database'").fetchall()
    cursors = con.execute("SELECT workspace_id, cursor FROM sync_state WHERE stream = 'events'").fetchall()
    with connect(engine) as conn:
        source = database_id(conn)
        last = select(func.max(events.c.id))
        ahead = [
            ws
            for ws, cursor in cursors
            if (cursor or 0) > (conn.execute(last.where(events.c.workspace_id == ws)).scalar() or 0)
        ]
    if held and held[0][0] == source and not ahead:
        return
    con.begin()
    try:
        if held or cursors:  # (a copy that does not say which database it is of is also copied afresh)
            log.warning(
                "the analytics store held a copy of another database (or of a later state of this one): "
                "copying this database afresh"
            )
            for table in COPIED_TABLES:
                con.execute(f"DELETE FROM {table}")
        con.execute(
            "INSERT INTO store_meta VALUES ('source_database', ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [source],
        )
        con.commit()
    except BaseException:
        con.rollback()
        raise


def sync(
    engine: Engine,
    path: str | Path,
    *,
    workspace_id: int | None = None,
    chunk_size: int = 10_000,
    settle_seconds: float | None = None,
    progress: Progress | None = None,
    profile_map: bool = True,
) -> SyncReport:
    """Copy new resolved events and changed profiles of one or every workspace into the store at ``path``,
    and bring its copy of the stored state up to date (``state_copy``). Without ``profile_map`` the changed
    profiles are left for the next sync: a batch recompute follows merges through the state copy instead.

    Idempotent and resumable: safe to run from several places (worker, CLI) one after another, and to
    rerun after a crash. ``progress(copied, remaining)`` is called after each committed chunk.
    Events received less than ``settle_seconds`` ago wait for the next sync (default: 10 s on PostgreSQL,
    whose concurrent writers can commit ids out of order; 0 on SQLite, whose writers are serialised).
    """
    if settle_seconds is None:
        settle_seconds = 0.0 if engine.dialect.name == "sqlite" else DEFAULT_SETTLE_SECONDS
    settle = timedelta(seconds=settle_seconds)
    report = SyncReport()
    zones = _workspace_zones(engine, workspace_id)
    con = open_store(path)
    try:
        _forget_another_databases_copy(engine, con)
        for ws, tz in zones.items():
            report.workspaces.append(ws)
            _sync_events(engine, con, ws, tz, chunk_size, settle, report, progress)
            if profile_map:
                _sync_profiles(engine, con, ws, chunk_size, report)
            report.state_profiles += sync_state_copy(engine, con, ws)
    finally:
        con.close()
    return report


def pending_events(engine: Engine, path: str | Path, *, workspace_id: int | None = None) -> int:
    """How many events a sync would read now (for progress bars)."""
    total = 0
    zones = _workspace_zones(engine, workspace_id)
    con = open_store(path)
    try:
        cursors = {ws: read_stream(con, ws, "events")[0] or 0 for ws in zones}
    finally:
        con.close()
    with connect(engine) as conn:
        for ws, cursor in cursors.items():
            total += conn.execute(
                select(func.count()).where(events.c.workspace_id == ws, events.c.id > cursor)
            ).scalar_one()
    return total
