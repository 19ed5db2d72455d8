"""When could a profile's stage change with no new event? The sweep's schedule.

Time-only changes come from the clock crossing a threshold of a time rule. For each time-dependent
part of the model's conditions this finds the earliest future moment it could flip for one profile:

- ``days_since(t) <op> N``: at t + N days and t + N+1 days (whichever is still ahead);
- ``count/sum/active_days(…, within=W)``: when the oldest event now inside the window leaves it
  (a profile with nothing in the window cannot change through it);
- ``active_weeks(n)``: at the next ISO week boundary, if the profile was active in the last n weeks.

The sweep then re-evaluates only profiles whose moment has come, so its cost follows the profiles
whose state can change, not the number of profiles. A bound that is early is harmless (the stage is
re-evaluated and stays); one that is late would delay a change, so every bound errs early.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Interval,
    Select,
    String,
    Table,
    and_,
    case,
    func,
    literal,
    select,
    type_coerce,
    union_all,
)

from lifeloop.conditions import ProfileView
from lifeloop.conditions.ast import (
    SEEN_TIMES,
    ActiveDays,
    ActiveWeeks,
    Compare,
    Condition,
    Count,
    DaysSince,
    EventTime,
    Fact,
    Interaction,
    Literal,
    Seen,
    Selector,
    Sum,
    parse_duration,
    walk,
)
from lifeloop.conditions.evaluator import next_iso_week
from lifeloop.conditions.facts import provider
from lifeloop.conditions.views import matches
from lifeloop.events.models import events
from lifeloop.lifecycle.models import lifecycle_rechecks
from lifeloop.profiles.computed import (
    bucket_names,
    computed_event_days,
    computed_event_times,
    day_start,
    epoch_day,
    event_name,
    raw_names,
)
from lifeloop.profiles.models import profiles
from lifeloop.store.rows import delete_in, insert_rows
from lifeloop.store.schema import UTCDateTime, sqlite_time

DAY = timedelta(days=1)


@functools.lru_cache(maxsize=256)
def _allwalk(conditions: tuple[Condition, ...]) -> tuple[object, ...]:
    """The nodes of a model's conditions; the same few models are walked for every profile."""
    return tuple(node for condition in conditions for node in walk(condition))


def _time_of(view: ProfileView, node: object) -> datetime | None:
    if isinstance(node, Seen):
        return view.seen(node.which)
    if isinstance(node, EventTime):
        return view.event_time(node.which, node.selector)
    return None  # now() never crosses a threshold of its own


def _recent_events(
    conn: Connection, workspace_id: int, profile_id: int, since: datetime
) -> list[tuple[str, datetime]]:
    """(name, time) of the profile's events after ``since``, oldest first: one indexed read per profile."""
    query = (
        select(events.c.type, events.c.event, events.c.timestamp)
        .where(
            events.c.workspace_id == workspace_id,
            events.c.profile_id == profile_id,
            events.c.timestamp > since,
        )
        .order_by(events.c.timestamp)
    )
    return [(event_name(r.type, r.event), r.timestamp) for r in conn.execute(query)]


def next_recheck(
    conditions: Iterable[Condition],
    view: ProfileView,
    conn: Connection,
    workspace_id: int,
    profile_id: int,
) -> datetime | None:
    """The earliest moment after ``view.now`` at which any of ``conditions`` could change by time alone."""
    now = view.now
    moments: list[datetime] = []
    nodes = _allwalk(tuple(conditions))
    windows = [
        w
        for n in nodes
        if isinstance(n, Count | Sum | ActiveDays) and n.within and (w := parse_duration(n.within))
    ]
    # Every windowed count reads the same recent events: fetched once, for the widest window.
    recent = _recent_events(conn, workspace_id, profile_id, now - max(windows)) if windows else []
    for node in nodes:
        if isinstance(node, Compare):
            for side, other in ((node.left, node.right), (node.right, node.left)):
                if isinstance(side, DaysSince) and (start := _time_of(view, side.time)) is not None:
                    if isinstance(other, Literal) and isinstance(other.value, int | float):
                        threshold = max(0, int(other.value))
                        moments += [start + threshold * DAY, start + (threshold + 1) * DAY]
                    else:  # compared with something else: it changes every day
                        moments.append(start + ((now - start) // DAY + 1) * DAY)
        elif isinstance(node, Count | Sum | ActiveDays) and node.within:
            window = parse_duration(node.within)
            if window is None:
                continue
            selector = Interaction() if isinstance(node, ActiveDays) else node.selector
            since = now - window
            oldest = next((t for name, t in recent if t > since and matches(selector, name)), None)
            if oldest is not None:
                moments.append(oldest + window)
        elif isinstance(node, ActiveWeeks):
            last = view.seen("last_interaction")
            if last is not None and last > now - (node.weeks + 1) * 7 * DAY:
                moments.append(next_iso_week(now))
        elif isinstance(node, Fact):  # a coupon or points lot expiring, a streak breaking at midnight
            at = provider(node).next_change(conn, workspace_id, profile_id, node, now=now)
            if at is not None:
                moments.append(at)
    ahead = [m for m in moments if m > now]
    return min(ahead) if ahead else None


# --- the same schedule for many profiles at once, in SQL (recompute) --------------------------------


class _Schedule:
    """Candidate recheck moments as ``SELECT profile_id, at`` queries over a range of profile ids.

    Time arithmetic per database: SQLite keeps UTC times as ``YYYY-MM-DD HH:MM:SS.ffffff`` text, so a
    moment is shifted on its whole seconds and keeps its fraction (exact, and the text still sorts as
    time); PostgreSQL adds intervals of seconds (never of days, which follow the session time zone).
    """

    def __init__(self, conn: Connection, workspace_id: int, now: datetime, low: int, high: int):
        self.ws, self.now, self.low, self.high = workspace_id, now, low, high
        self.pg = conn.dialect.name == "postgresql"
        self.keys: list[tuple[str, Selector | None]] = []
        self.windows: list[tuple[Selector, timedelta]] = []
        self.times: Any = None  # the CTEs ``build`` makes
        self.days: Any = None

    def at(self, moment: datetime) -> ColumnElement[Any]:
        """A constant time, comparable with stored times (text on SQLite)."""
        if self.pg:
            return literal(moment, UTCDateTime())
        return literal(sqlite_time(moment), String())

    def plus(self, moment: Any, seconds: Any) -> ColumnElement[Any]:
        if self.pg:
            return moment + func.make_interval(0, 0, 0, 0, 0, 0, seconds, type_=Interval)
        shift = func.printf("%+d seconds", seconds, type_=String)
        whole = func.strftime("%Y-%m-%d %H:%M:%S", func.substr(moment, 1, 19), shift, type_=String)
        return whole + func.substr(moment, 20, type_=String)

    def day_start_plus(self, day: Any, seconds: int) -> ColumnElement[Any]:
        if self.pg:
            return func.to_timestamp(day * 86400 + seconds, type_=UTCDateTime)
        whole = func.strftime("%Y-%m-%d %H:%M:%S", day * 86400 + seconds, "unixepoch", type_=String)
        return whole + ".000000"

    def profiles(self, column: Any) -> list[ColumnElement[bool]]:
        return [column >= self.low, column <= self.high]

    @staticmethod
    def time_key(node: object) -> tuple[str, Selector | None] | None:
        """(first/last, selector) of a time value; None for now(), which crosses no threshold."""
        if isinstance(node, Seen):
            return SEEN_TIMES[node.which]
        if isinstance(node, EventTime):
            return node.which, node.selector
        return None

    def build(
        self, keys: Sequence[tuple[str, Selector | None]], windows: Sequence[tuple[Selector, timedelta]]
    ) -> None:
        """One grouped scan per computed table for the whole range: every time value (``first_seen``,
        ``last("X")``…) as a column of ``self.times``, every window's first whole day inside it as a
        column of ``self.days`` (materialised, so the candidates that read them do not rescan)."""
        self.keys, self.windows = list(keys), list(windows)
        if self.keys:
            t = computed_event_times.c
            columns = []
            for i, (edge, selector) in enumerate(self.keys):
                value = t.first_at if edge == "first" else t.last_at
                names = bucket_names(t.event, selector)
                picked = case((and_(*names), value)) if names else value
                columns.append((func.min(picked) if edge == "first" else func.max(picked)).label(f"t{i}"))
            query = select(t.profile_id, *columns).where(
                t.workspace_id == self.ws, *self.profiles(t.profile_id)
            )
            self.times = query.group_by(t.profile_id).cte("recheck_times").prefix_with("MATERIALIZED")
        if self.windows:
            b = computed_event_days.c
            firsts = [epoch_day(self.now - window) for _selector, window in self.windows]
            columns = [
                func.min(case((and_(*bucket_names(b.event, selector), b.day > first), b.day))).label(f"d{i}")
                for i, ((selector, _window), first) in enumerate(zip(self.windows, firsts, strict=True))
            ]
            mine = (b.workspace_id == self.ws, *self.profiles(b.profile_id), b.day > min(firsts))
            query = select(b.profile_id, *columns).where(*mine).group_by(b.profile_id)
            self.days = query.cte("recheck_days").prefix_with("MATERIALIZED")

    def time(self, key: tuple[str, Selector | None]) -> Any:
        return self.times.c[f"t{self.keys.index(key)}"]

    def thresholds(self, key: tuple[str, Selector | None], days: set[int]) -> Select[Any]:
        """``days_since(t) <op> n`` can flip at t + n and t + n+1 days: the first of those still ahead,
        for every ``n`` at once (one time shift per profile)."""
        t = self.time(key)
        shifts = sorted({d for n in days for d in (n, n + 1)})
        # t + k days > now ⟺ t > now − k days; the first k (ascending) that holds gives the earliest.
        moment = case(*((t > self.at(self.now - k * DAY), self.plus(t, k * 86400)) for k in shifts))
        return select(self.times.c.profile_id, moment)

    def window_exit(self, selector: Selector, window: timedelta) -> list[Select[Any]]:
        """When the oldest selected event now in the window leaves it.

        Whole days after the window's first day come from the daily buckets (the day's start stands in
        for its events: early by less than a day); the first, partial day from the raw events of the
        profiles with a bucket that day, through the ``(workspace, profile, timestamp)`` index.
        """
        since = self.now - window
        first_day, seconds = epoch_day(since), int(window.total_seconds())
        day = self.days.c[f"d{self.windows.index((selector, window))}"]
        b = computed_event_days.c
        mine = (b.workspace_id == self.ws, *self.profiles(b.profile_id), *bucket_names(b.event, selector))
        edge = select(b.profile_id).where(*mine, b.day == first_day)
        e = events.c
        raw = (
            select(e.profile_id, func.min(e.timestamp).label("t"))
            .where(
                e.workspace_id == self.ws,
                e.profile_id.in_(edge),
                e.timestamp > literal(since, UTCDateTime()),
                e.timestamp < literal(day_start(first_day + 1), UTCDateTime()),
                raw_names(events, selector),
            )
            .group_by(e.profile_id)
            .subquery()
        )
        return [
            select(self.days.c.profile_id, self.day_start_plus(day, seconds)).where(day.is_not(None)),
            select(raw.c.profile_id, self.plus(raw.c.t, seconds)),
        ]

    def week_boundary(self, weeks: int) -> list[Select[Any]]:
        t = self.time(SEEN_TIMES["last_interaction"])
        recent = self.now - (weeks + 1) * 7 * DAY
        boundary = self.at(next_iso_week(self.now))
        return [select(self.times.c.profile_id, boundary).where(t > self.at(recent))]


def recheck_candidates(
    conn: Connection,
    workspace_id: int,
    conditions: Iterable[Condition],
    *,
    now: datetime,
    low: int,
    high: int,
) -> tuple[_Schedule, list[Select[Any]]]:
    """``SELECT profile_id, at`` queries giving, for the profiles with an id in ``low..high``, every moment
    after which one of ``conditions`` could change by time alone (``next_recheck`` for many profiles).

    Each moment is the per-profile one or earlier, never later: day buckets stand in for the raw events
    of whole days, so a window's exit can come up to a day early (the sweep then re-evaluates the
    profile, finds it unchanged and stores the exact time).
    """
    plan = _Schedule(conn, workspace_id, now, low, high)
    thresholds: dict[tuple[str, Selector | None], set[int]] = {}
    windows: dict[tuple[Selector, timedelta], None] = {}  # ordered, without repeats
    weeks: set[int] = set()
    facts: dict[Fact, None] = {}
    for condition in conditions:
        for node in walk(condition):
            if isinstance(node, Compare):
                for side, other in ((node.left, node.right), (node.right, node.left)):
                    if not isinstance(side, DaysSince):
                        continue
                    # The parser only lets days_since(…) be compared with a number.
                    key = plan.time_key(side.time)
                    if (
                        key is not None
                        and isinstance(other, Literal)
                        and isinstance(other.value, int | float)
                    ):
                        thresholds.setdefault(key, set()).add(max(0, int(other.value)))
            elif isinstance(node, Count | Sum | ActiveDays) and node.within:
                window = parse_duration(node.within)
                if window is not None:
                    selector = Interaction() if isinstance(node, ActiveDays) else node.selector
                    windows[(selector, window)] = None
            elif isinstance(node, ActiveWeeks):
                weeks.add(node.weeks)
            elif isinstance(node, Fact):
                facts[node] = None
    keys = list(thresholds) + ([SEEN_TIMES["last_interaction"]] if weeks else [])
    plan.build(list(dict.fromkeys(keys)), list(windows))
    candidates: list[Select[Any]] = []
    for selector, window in windows:
        candidates += plan.window_exit(selector, window)
    for n in sorted(weeks):
        candidates += plan.week_boundary(n)
    candidates += [plan.thresholds(key, days) for key, days in thresholds.items()]
    for fact in facts:  # the engagement programme's moments (conditions.facts)
        moments = provider(fact).change_moments(conn, workspace_id, fact, now=now, low=low, high=high)
        if moments is not None:
            candidates.append(moments)
    return plan, candidates


def store_rechecks(
    conn: Connection,
    table: Table,
    scope: dict[str, Any],
    plan: _Schedule,
    candidates: list[Select[Any]],
) -> None:
    """Bring the rechecks in ``table`` (rows matching ``scope``, e.g. workspace and model) of the plan's
    live profiles to the earliest future moment of ``candidates``, computed in one query. Only the rows
    that differ are deleted and inserted: a recompute that changes nothing writes (and logs) nothing."""
    low, high = plan.low, plan.high
    mine = [table.c[k] == v for k, v in scope.items()]
    wanted: dict[int, datetime] = {}
    if candidates:
        moments = union_all(*candidates).subquery()
        pid, at = moments.c[0], moments.c[1]
        live = select(profiles.c.id).where(
            profiles.c.workspace_id == plan.ws,
            profiles.c.merged_into.is_(None),
            profiles.c.id >= low,
            profiles.c.id <= high,
        )
        earliest = type_coerce(func.min(at), UTCDateTime())
        source = select(pid, earliest).where(at > plan.at(plan.now), pid.in_(live)).group_by(pid)
        wanted = {int(p): t for p, t in conn.execute(source)}
    c = table.c
    held = select(c.profile_id, c.recheck_at).where(*mine, c.profile_id >= low, c.profile_id <= high)
    stored: dict[int, datetime] = {int(p): t for p, t in conn.execute(held)}
    delete_in(conn, table, "profile_id", [p for p, t in stored.items() if wanted.get(p) != t], *mine)
    rows = [(*scope.values(), p, t) for p, t in wanted.items() if stored.get(p) != t]
    insert_rows(conn, table, [*scope, "profile_id", "recheck_at"], rows)


def write_rechecks(
    conn: Connection,
    workspace_id: int,
    model: str,
    conditions: Iterable[Condition],
    *,
    now: datetime,
    low: int,
    high: int,
) -> None:
    """``next_recheck`` of the model for every live profile with an id in ``low..high``, computed and
    stored in SQL (``recheck_candidates``, ``store_rechecks``)."""
    plan, candidates = recheck_candidates(conn, workspace_id, conditions, now=now, low=low, high=high)
    scope = {"workspace_id": workspace_id, "model": model}
    store_rechecks(conn, lifecycle_rechecks, scope, plan, candidates)
