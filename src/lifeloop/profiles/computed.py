"""Computed properties: per-user aggregates maintained incrementally as events are resolved.

Three tables, all keyed by (workspace, profile, event name):

- ``computed_event_days``  how many events per UTC day (``day`` = days since 1970-01-01);
- ``computed_event_sums``  per UTC day, the sum of every top-level numeric property;
- ``computed_event_times`` the first and last time of each event name.

Every event type has a name here (``event_name``): a track call its ``event``, a page call
``Page Viewed``, a screen call ``Screen Viewed``, the others ``$identify``, ``$group``, ``$alias``.
The resolver calls ``apply_resolved_events`` in the transaction that places events on profiles and
``merge_profiles`` when two profiles merge; ``recompute`` rebuilds everything from ``events``.
Sums are double precision: they equal a recompute exactly while amounts are integers or binary
fractions, and to the last bit otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    ColumnElement,
    Connection,
    Date,
    Float,
    ForeignKey,
    Integer,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    and_,
    bindparam,
    case,
    cast,
    column,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    true,
    type_coerce,
)
from sqlalchemy.dialects import postgresql, sqlite

from lifeloop.store.rows import sqlite_rows
from lifeloop.store.schema import Id, UTCDateTime, metadata

computed_event_days = Table(
    "computed_event_days",
    metadata,
    Column("workspace_id", Id, ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False),
    Column("profile_id", Id, nullable=False),
    Column("event", String(255), nullable=False),
    Column("day", Integer, nullable=False),  # UTC days since 1970-01-01: week and window maths is integer
    Column("event_count", Integer, nullable=False),
    PrimaryKeyConstraint("workspace_id", "profile_id", "event", "day"),
)

computed_event_sums = Table(
    "computed_event_sums",
    metadata,
    Column("workspace_id", Id, ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False),
    Column("profile_id", Id, nullable=False),
    Column("event", String(255), nullable=False),
    Column("day", Integer, nullable=False),
    Column("property", String(255), nullable=False),
    Column("total", Float, nullable=False),
    PrimaryKeyConstraint("workspace_id", "profile_id", "event", "day", "property"),
)

computed_event_times = Table(
    "computed_event_times",
    metadata,
    Column("workspace_id", Id, ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False),
    Column("profile_id", Id, nullable=False),
    Column("event", String(255), nullable=False),
    Column("first_at", UTCDateTime, nullable=False),
    Column("last_at", UTCDateTime, nullable=False),
    PrimaryKeyConstraint("workspace_id", "profile_id", "event"),
)

COMPUTED_TABLES = (computed_event_days, computed_event_sums, computed_event_times)

# lifeloop's own events: they never count as the user's interaction (docs/presets.md, "Interaction").
NON_INTERACTION_EVENTS = frozenset(
    {
        "Message Delivered",
        "Message Opened",
        "Message Clicked",
        "Message Failed",
        "Lifecycle Stage Entered",
        "Lifecycle Stage Exited",
        "Segment Entered",
        "Segment Exited",
        "Tag Added",
        "Tag Removed",
        "Churn Risk Detected",
        "Advisor Task Created",
        "Journey Entered",
        "Journey Exited",
        "Journey Step Completed",
        "Journey Converted",
        "Message Suppressed",
        # The engagement programme's records: a coupon or points the customer got is not their doing
        # (the order or check-in that earned them is). ``Checked In`` stays an interaction: made through
        # the API, it is the only trace of the customer's own act.
        "Coupon Issued",
        "Coupon Redeemed",
        "Coupon Expired",
        "Points Earned",
        "Points Spent",
        "Points Expired",
        "Tier Changed",
        "Referral Joined",
        "Referral Completed",
        "Referral Rejected",
        "Advisor Assigned",
        "Advisor Unassigned",
        "Advisor Task Completed",
        "Advisor Task Cancelled",
    }
)
# Message types the user causes; identify/group/alias are bookkeeping, often sent by a backend.
INTERACTION_TYPES = ("track", "page", "screen")
_TYPE_NAMES = {"page": "Page Viewed", "screen": "Screen Viewed"}

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DAY = timedelta(days=1)
MAX_NAME = 255


@dataclass(frozen=True, slots=True)
class ResolvedEvent:
    """An event the resolver has placed on a profile: all the aggregates need."""

    profile_id: int
    type: str
    event: str | None
    timestamp: datetime
    properties: Mapping[str, Any] | None = None


def event_name(type_: str, event: str | None) -> str:
    """The name conditions use for an event: ``count("Page Viewed")`` counts page calls."""
    if type_ == "track":
        return (event or "")[:MAX_NAME]
    return _TYPE_NAMES.get(type_, f"${type_}")


def is_interaction_name(name: str) -> bool:
    """Whether events of this name are the user's own doing (see ``NON_INTERACTION_EVENTS``)."""
    return not name.startswith("$") and name not in NON_INTERACTION_EVENTS


def epoch_day(ts: datetime) -> int:
    """The UTC day of ``ts`` as days since 1970-01-01."""
    return (ts - EPOCH) // DAY


def day_start(day: int) -> datetime:
    return EPOCH + day * DAY


def bucket_names(column: Any, selector: str | Any | None) -> list[ColumnElement[bool]]:
    """Rows of the computed tables (keyed by event name) that a selector (an event name, ``Interaction``,
    or None for every event) selects."""
    if selector is None:
        return []
    if not isinstance(selector, str):  # conditions.ast.Interaction
        return [~column.startswith("$"), column.not_in(sorted(NON_INTERACTION_EVENTS))]
    return [column == selector]


def raw_names(e: Any, selector: str | Any) -> ColumnElement[bool]:
    """Raw events (of the events table or an alias ``e``) whose ``event_name`` a selector selects."""
    if not isinstance(selector, str):  # conditions.ast.Interaction
        track = and_(
            e.c.type == "track", ~e.c.event.startswith("$"), e.c.event.not_in(sorted(NON_INTERACTION_EVENTS))
        )
        return or_(e.c.type.in_([t for t in INTERACTION_TYPES if t != "track"]), track)
    named = and_(e.c.type == "track", e.c.event == selector)
    for type_, name in _TYPE_NAMES.items():
        if selector == name:
            return or_(named, e.c.type == type_)
    if selector.startswith("$") and selector[1:] not in INTERACTION_TYPES:
        return or_(named, e.c.type == selector[1:])
    return named


def numeric_properties(properties: Mapping[str, Any] | None) -> Iterable[tuple[str, float]]:
    """Top-level numbers (not booleans) of an event: the amounts ``sum()`` can add up."""
    for key, value in (properties or {}).items():
        if (
            isinstance(value, int | float)
            and not isinstance(value, bool)
            and len(key) <= MAX_NAME
            and math.isfinite(value)
        ):
            yield key, float(value)


@dataclass
class _Aggregates:
    days: dict[tuple[int, str, int], int]
    sums: dict[tuple[int, str, int, str], float]
    times: dict[tuple[int, str], list[datetime]]

    @classmethod
    def of(cls, events: Iterable[ResolvedEvent]) -> _Aggregates:
        agg = cls({}, {}, {})
        for ev in events:
            name = event_name(ev.type, ev.event)
            day = epoch_day(ev.timestamp)
            key = (ev.profile_id, name, day)
            agg.days[key] = agg.days.get(key, 0) + 1
            for prop, value in numeric_properties(ev.properties):
                skey = (ev.profile_id, name, day, prop)
                agg.sums[skey] = agg.sums.get(skey, 0.0) + value
            span = agg.times.get((ev.profile_id, name))
            if span is None:
                agg.times[(ev.profile_id, name)] = [ev.timestamp, ev.timestamp]
            else:
                span[0] = min(span[0], ev.timestamp)
                span[1] = max(span[1], ev.timestamp)
        return agg


def _insert(conn: Connection, table: Table) -> Any:
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)


def _upsert_days(conn: Connection, statement: Any) -> Any:
    t = computed_event_days
    return statement.on_conflict_do_update(
        index_elements=["workspace_id", "profile_id", "event", "day"],
        set_={"event_count": t.c.event_count + statement.excluded.event_count},
    )


def _upsert_sums(conn: Connection, statement: Any) -> Any:
    t = computed_event_sums
    return statement.on_conflict_do_update(
        index_elements=["workspace_id", "profile_id", "event", "day", "property"],
        set_={"total": t.c.total + statement.excluded.total},
    )


def _upsert_times(conn: Connection, statement: Any) -> Any:
    t, new = computed_event_times, statement.excluded
    return statement.on_conflict_do_update(
        index_elements=["workspace_id", "profile_id", "event"],
        set_={
            "first_at": case((new.first_at < t.c.first_at, new.first_at), else_=t.c.first_at),
            "last_at": case((new.last_at > t.c.last_at, new.last_at), else_=t.c.last_at),
        },
    )


_SQLITE_UPSERTS: dict[str, tuple[str, list[int]]] = {}  # table → (SQL, which column each ``?`` takes)
_PG_UPSERTS: dict[str, Any] = {}  # table → INSERT … SELECT FROM json_to_recordset(:rows) ON CONFLICT …


def _upsert(conn: Connection, table: Table, upsert: Any, rows: list[tuple[Any, ...]]) -> None:
    """``upsert`` (``_upsert_days``…) of ``rows``, tuples of every column of ``table`` in order. SQLite gets
    one driver ``executemany`` of pre-serialised values: SQLAlchemy's per-row parameter processing cost
    more than the upsert itself."""
    columns = [c.name for c in table.columns]
    if conn.dialect.name != "sqlite":
        # One statement over one JSON document: an executemany would send a statement per row.
        if table.name not in _PG_UPSERTS:
            rows_of = func.json_to_recordset(bindparam("rows", type_=JSON)).table_valued(
                *(column(c.name, c.type) for c in table.columns)
            )
            source = select(*rows_of.render_derived(name="r", with_types=True).c)
            _PG_UPSERTS[table.name] = upsert(conn, _insert(conn, table).from_select(columns, source))
        keys = [str(c) for c in columns]  # plain str: orjson refuses str subclasses as keys
        conn.execute(_PG_UPSERTS[table.name], {"rows": [dict(zip(keys, row, strict=True)) for row in rows]})
        return
    if table.name not in _SQLITE_UPSERTS:
        compiled = upsert(conn, _insert(conn, table)).compile(dialect=conn.dialect, column_keys=columns)
        order = [columns.index(name) for name in compiled.positiontup or ()]
        _SQLITE_UPSERTS[table.name] = (compiled.string, order)
    sql, order = _SQLITE_UPSERTS[table.name]
    conn.exec_driver_sql(sql, [tuple(row[i] for i in order) for row in sqlite_rows(table, columns, rows)])


def _write(conn: Connection, workspace_id: int, agg: _Aggregates) -> None:
    # Sorted keys: two writers touching the same rows lock them in the same order (no deadlock).
    ws = workspace_id
    if agg.days:
        days = [(ws, p, e, d, n) for (p, e, d), n in sorted(agg.days.items())]
        _upsert(conn, computed_event_days, _upsert_days, days)
    if agg.sums:
        sums = [(ws, p, e, d, k, v) for (p, e, d, k), v in sorted(agg.sums.items())]
        _upsert(conn, computed_event_sums, _upsert_sums, sums)
    if agg.times:
        times = [(ws, p, e, first, last) for (p, e), (first, last) in sorted(agg.times.items())]
        _upsert(conn, computed_event_times, _upsert_times, times)


def apply_resolved_events(conn: Connection, workspace_id: int, events: Sequence[ResolvedEvent]) -> None:
    """Add newly resolved events to their profiles' aggregates, in the caller's transaction.

    Each event must be applied exactly once (the resolver calls this as it assigns ``profile_id``).
    """
    if events:
        _write(conn, workspace_id, _Aggregates.of(events))


def merge_profiles(conn: Connection, workspace_id: int, *, loser: int, winner: int) -> None:
    """Fold the loser's aggregates into the winner's and drop the loser's rows."""
    if loser == winner:
        return
    for table, upsert, values in (
        (computed_event_days, _upsert_days, ("event", "day", "event_count")),
        (computed_event_sums, _upsert_sums, ("event", "day", "property", "total")),
        (computed_event_times, _upsert_times, ("event", "first_at", "last_at")),
    ):
        source = (
            select(literal(workspace_id), literal(winner), *(table.c[c] for c in values))
            .where(table.c.workspace_id == workspace_id, table.c.profile_id == loser)
            .order_by(*(table.c[c] for c in values[:-1]))
        )
        statement = _insert(conn, table).from_select(["workspace_id", "profile_id", *values], source)
        conn.execute(upsert(conn, statement))
        conn.execute(delete(table).where(table.c.workspace_id == workspace_id, table.c.profile_id == loser))


def _clear(conn: Connection, table: Table, workspace_id: int) -> None:
    """Delete a workspace's rows. When no other workspace has rows in the table, SQLite gets a plain
    ``DELETE FROM`` (its truncate optimisation frees the pages at once instead of deleting row by row:
    seconds saved per million rows)."""
    if conn.dialect.name == "sqlite":
        # Two seeks on the primary key (it starts with workspace_id), never a scan of this workspace's rows.
        ws = table.c.workspace_id
        probes = [select(literal(1)).where(side).limit(1) for side in (ws < workspace_id, ws > workspace_id)]
        options = {"cross_workspace": True}
        if all(conn.execute(probe.execution_options(**options)).first() is None for probe in probes):
            conn.execute(delete(table).execution_options(**options))
            return
    conn.execute(delete(table).where(table.c.workspace_id == workspace_id))


def recompute(conn: Connection, workspace_id: int) -> int:
    """Rebuild a workspace's aggregates from its event log in three ``INSERT … SELECT``s.

    The grouping is done by the database, independently of the incremental Python path, so the
    tests comparing the two compare two implementations. Returns how many events were counted.
    Run it with the workspace's resolver paused (or inside the resolver's lock): events placed
    while it runs could otherwise be missed.
    """
    from lifeloop.events.models import events  # the log is read here only, to rebuild

    pg = conn.dialect.name == "postgresql"
    for table in COMPUTED_TABLES:
        _clear(conn, table, workspace_id)
    e = events
    name = case(
        (e.c.type == "track", func.coalesce(e.c.event, "")),
        (e.c.type == "page", "Page Viewed"),
        (e.c.type == "screen", "Screen Viewed"),
        else_=literal("$", String()) + e.c.type,
    )
    if pg:  # whole UTC days since 1970-01-01, exactly as epoch_day()
        day: Any = type_coerce(
            cast(func.timezone("UTC", e.c.timestamp), Date) - cast(literal("1970-01-01"), Date), Integer
        )
    else:  # stored as "YYYY-MM-DD HH:MM:SS.ffffff" UTC; julianday of a date is exact (n + 0.5)
        day = cast(func.julianday(func.substr(e.c.timestamp, 1, 10)) - 2440587.5, Integer)
    mine = (e.c.workspace_id == workspace_id, e.c.profile_id.is_not(None))
    ws = literal(workspace_id, Id)

    days = (
        select(ws, e.c.profile_id, name, day, func.count()).where(*mine).group_by(e.c.profile_id, name, day)
    )
    conn.execute(
        insert(computed_event_days).from_select(
            ["workspace_id", "profile_id", "event", "day", "event_count"], days
        )
    )
    times = (
        select(ws, e.c.profile_id, name, func.min(e.c.timestamp), func.max(e.c.timestamp))
        .where(*mine)
        .group_by(e.c.profile_id, name)
    )
    conn.execute(
        insert(computed_event_times).from_select(
            ["workspace_id", "profile_id", "event", "first_at", "last_at"], times
        )
    )
    if pg:
        document = case(
            (func.jsonb_typeof(e.c.properties) == "object", e.c.properties), else_=func.jsonb_build_object()
        )
        each = func.jsonb_each(document).table_valued("key", "value")
        numeric = func.jsonb_typeof(each.c.value) == "number"
        amount: Any = func.sum(cast(cast(each.c.value, Text), Float))
    else:
        each = func.json_each(e.c.properties).table_valued("key", "value", "type")
        numeric = and_(func.json_type(e.c.properties) == "object", each.c.type.in_(("integer", "real")))
        amount = func.total(each.c.value)  # total(): always a float, never an integer overflow
    sums = (
        select(ws, e.c.profile_id, name, day, each.c.key, amount)
        .select_from(e)
        .join(each, true())
        .where(*mine, numeric, func.length(each.c.key) <= MAX_NAME)
        .group_by(e.c.profile_id, name, day, each.c.key)
    )
    conn.execute(
        insert(computed_event_sums).from_select(
            ["workspace_id", "profile_id", "event", "day", "property", "total"], sums
        )
    )
    counted = select(func.coalesce(func.sum(computed_event_days.c.event_count), 0)).where(
        computed_event_days.c.workspace_id == workspace_id
    )
    return int(conn.execute(counted).scalar_one())
