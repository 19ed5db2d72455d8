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

from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta

from sqlalchemy import Connection, select

from lifeloop.conditions import ProfileView
from lifeloop.conditions.ast import (
    ActiveDays,
    ActiveWeeks,
    Compare,
    Condition,
    Count,
    DaysSince,
    EventTime,
    Interaction,
    Literal,
    Seen,
    Selector,
    Sum,
    parse_duration,
)
from lifeloop.conditions.views import matches
from lifeloop.events.models import events
from lifeloop.profiles.computed import EPOCH, event_name

DAY = timedelta(days=1)


def _nodes(node: object) -> Iterator[object]:
    """Every node of a condition tree (dataclasses all the way down)."""
    yield node
    for name in getattr(node, "__slots__", ()):
        child = getattr(node, name, None)
        if isinstance(child, list | tuple):
            for item in child:
                yield from _nodes(item)
        elif child is not None and hasattr(child, "__slots__"):
            yield from _nodes(child)


def _time_of(view: ProfileView, node: object) -> datetime | None:
    if isinstance(node, Seen):
        return view.seen(node.which)
    if isinstance(node, EventTime):
        return view.event_time(node.which, node.selector)
    return None  # now() never crosses a threshold of its own


def _earliest_in_window(
    conn: Connection, workspace_id: int, profile_id: int, selector: Selector | None, since: datetime
) -> datetime | None:
    query = (
        select(events.c.type, events.c.event, events.c.timestamp)
        .where(
            events.c.workspace_id == workspace_id,
            events.c.profile_id == profile_id,
            events.c.timestamp > since,
        )
        .order_by(events.c.timestamp)
    )
    for row in conn.execute(query):
        if matches(selector, event_name(row.type, row.event)):
            return row.timestamp
    return None


def _next_iso_week(now: datetime) -> datetime:
    days = (now - EPOCH) // DAY
    monday = days - (days + 3) % 7  # 1970-01-01 was a Thursday
    return EPOCH + (monday + 7) * DAY


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
    for condition in conditions:
        for node in _nodes(condition):
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
                oldest = _earliest_in_window(conn, workspace_id, profile_id, selector, now - window)
                if oldest is not None:
                    moments.append(oldest + window)
            elif isinstance(node, ActiveWeeks):
                last = view.seen("last_interaction")
                if last is not None and last > now - (node.weeks + 1) * 7 * DAY:
                    moments.append(_next_iso_week(now))
    ahead = [m for m in moments if m > now]
    return min(ahead) if ahead else None
