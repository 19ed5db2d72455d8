"""Time triggers: schedules (cron in the workspace's zone) and date properties (birthdays, expiries).

Each such journey keeps ``next_schedule_at``, the next moment worth looking; a worker's tick takes the
journeys whose moment has come. A schedule enters its segment's members under the fire time's entry
key (so a second worker or a restart enters nobody twice). A date trigger looks every hour for the
profiles whose date falls in the next day and enters them to start at their own local time.
"""

from __future__ import annotations

import calendar
import logging
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, select, update

from lifeloop.journeys import definition as d
from lifeloop.journeys.engine import Turn, definition_of, enter, trait_moment
from lifeloop.journeys.models import journeys
from lifeloop.store.schema import utcnow

log = logging.getLogger(__name__)

DATE_LOOK_EVERY = timedelta(hours=1)
# Date entries are made this far ahead of their local moment, and late by at most DATE_GRACE.
DATE_AHEAD = timedelta(hours=26)
DATE_GRACE = timedelta(hours=2)


def _workspace_zone(conn: Connection, workspace_id: int) -> Any:
    from lifeloop.messaging.policy import zone
    from lifeloop.workspaces.service import get_workspace

    return zone(get_workspace(conn, workspace_id).timezone)


def next_fire(cron: str, after: datetime, tz: Any) -> datetime:
    """The first cron moment after ``after``, read in ``tz`` (DST-aware), as UTC."""
    from croniter import croniter

    local = croniter(cron, after.astimezone(tz)).get_next(datetime)
    return local.astimezone(after.tzinfo)


def first_look(conn: Connection, workspace_id: int, defn: d.Definition, now: datetime) -> datetime | None:
    """When a newly published journey's time trigger is first looked at (None: not a time trigger)."""
    if isinstance(defn.trigger, d.ScheduleTrigger):
        return next_fire(defn.trigger.cron, now, _workspace_zone(conn, workspace_id))
    if isinstance(defn.trigger, d.DateTrigger):
        return now
    return None


def occurrence_day(value: date, year: int) -> date:
    """The yearly occurrence of ``value`` in ``year`` (29 February falls on the 28th in other years)."""
    day = min(value.day, calendar.monthrange(year, value.month)[1])
    return date(year, value.month, day)


def date_candidates(
    trigger: d.DateTrigger, value: str, tz: Any, now: datetime
) -> list[tuple[date, datetime]]:
    """(occurrence, local moment) pairs of one profile's date whose moment lies in the look's window."""
    from lifeloop.messaging.policy import at_local

    moment = trait_moment(value)
    if moment is None:
        return []
    base = moment.date()
    offset = d.parse_duration(trigger.offset, field="offset", signed=True)
    clock = d.parse_clock(trigger.at)
    years = [base.year] if trigger.repeat == "once" else [now.year - 1, now.year, now.year + 1]
    found = []
    for year in years:
        occurrence = base if trigger.repeat == "once" else occurrence_day(base, year)
        fire = at_local(occurrence + offset, clock, tz)
        if now - DATE_GRACE < fire <= now + DATE_AHEAD:
            found.append((occurrence, fire))
    return found


def _month_days(trigger: d.DateTrigger, now: datetime) -> list[str]:
    """The MM-DD of every date whose moment can fall in the window, in any time zone."""
    offset = d.parse_duration(trigger.offset, field="offset", signed=True)
    first = (now - DATE_GRACE - timedelta(days=1) - offset).date()
    last = (now + DATE_AHEAD + timedelta(days=1) - offset).date()
    days = set()
    day = first
    while day <= last:
        days.add(day.strftime("%m-%d"))
        if day.month == 2 and day.day == 28:
            days.add("02-29")  # a leap-day birthday is celebrated on the 28th in other years
        day += timedelta(days=1)
    return sorted(days)


def _enter_dates(conn: Connection, row: Any, defn: d.Definition, now: datetime) -> int:
    from lifeloop.messaging.policy import zone
    from lifeloop.profiles.service import profiles_with_dates

    trigger = defn.trigger
    assert isinstance(trigger, d.DateTrigger)
    ws_zone = _workspace_zone(conn, row.workspace_id)
    entries, due = [], {}
    for pid, value, tz_name in profiles_with_dates(
        conn, row.workspace_id, trigger.trait, month_days=_month_days(trigger, now)
    ):
        tz = zone(tz_name, ws_zone.key)
        for occurrence, fire in date_candidates(trigger, value, tz, now):
            trigger_doc = {
                "event": "$date",
                "message_id": f"date:{occurrence.isoformat()}",
                "properties": {"trait": trigger.trait, "date": value, "occurrence": occurrence.isoformat()},
            }
            entries.append((pid, f"date:{occurrence.isoformat()}", trigger_doc))
            due[pid] = max(fire, now)
    turn = Turn(row.workspace_id, now)
    ids = enter(conn, row.workspace_id, row.id, row.version, entries, now=now, turn=turn, due_at=due)
    turn.flush(conn)
    return len(ids)


def _enter_schedule(conn: Connection, row: Any, defn: d.Definition, fire: datetime, now: datetime) -> int:
    from lifeloop.audience.query import member_ids
    from lifeloop.conditions import matching_profiles
    from lifeloop.profiles.service import live_profile_ids

    trigger = defn.trigger
    assert isinstance(trigger, d.ScheduleTrigger)
    pids = (
        member_ids(conn, row.workspace_id, trigger.segment)
        if trigger.segment
        else live_profile_ids(conn, row.workspace_id)
    )
    condition = defn.conditions.get("trigger.condition")
    if condition is not None:
        keep = set(matching_profiles(conn, row.workspace_id, condition, now=now))
        pids = [p for p in pids if p in keep]
    key = f"schedule:{fire.isoformat()}"
    trigger_doc = {"event": "$schedule", "message_id": key, "properties": {"fired_at": fire.isoformat()}}
    turn = Turn(row.workspace_id, now)
    ids = enter(
        conn, row.workspace_id, row.id, row.version, [(p, key, trigger_doc) for p in pids],
        now=now, turn=turn, check_condition=False,
    )  # fmt: skip
    turn.flush(conn)
    return len(ids)


def tick(engine: Engine, *, now: datetime | None = None) -> int:
    """Look at every time-triggered journey whose moment has come; returns how many runs were entered."""
    from lifeloop.store.engine import connect, transaction

    now = now or utcnow()
    with connect(engine) as conn:
        due = list(
            conn.execute(
                select(journeys.c.id, journeys.c.workspace_id)
                .where(
                    journeys.c.status == "active",
                    journeys.c.trigger_kind.in_(["schedule", "date"]),
                    journeys.c.next_schedule_at <= now,
                )
                .execution_options(cross_workspace=True)
            )
        )
    entered = 0
    for journey_id, workspace_id in due:

        def work(conn: Connection, journey_id: int = journey_id, workspace_id: int = workspace_id) -> int:
            return look(conn, workspace_id, journey_id, now)

        entered += transaction(engine, work, background=True)
    return entered


def look(conn: Connection, workspace_id: int, journey_id: int, now: datetime) -> int:
    """One look at a time-triggered journey (locked, so two workers do not both look)."""
    query = select(journeys).where(journeys.c.workspace_id == workspace_id, journeys.c.id == journey_id)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    row = conn.execute(query).first()
    if row is None or row.status != "active" or row.next_schedule_at is None or row.next_schedule_at > now:
        return 0
    defn = definition_of(conn, workspace_id, row.id, row.version)
    if isinstance(defn.trigger, d.ScheduleTrigger):
        entered = _enter_schedule(conn, row, defn, row.next_schedule_at, now)
        following = next_fire(
            defn.trigger.cron, max(row.next_schedule_at, now), _workspace_zone(conn, workspace_id)
        )
    else:
        entered = _enter_dates(conn, row, defn, now)
        following = now + DATE_LOOK_EVERY
    conn.execute(
        update(journeys)
        .where(journeys.c.workspace_id == workspace_id, journeys.c.id == row.id)
        .values(next_schedule_at=following)
    )
    log.info("journey %s: %d entered by its %s trigger", row.key, entered, defn.trigger.kind)
    return entered
