"""Daily check-in (每日签到): one per customer per day of the workspace's calendar, streaks, streak
bonuses, and make-up check-ins (补签) paid in points.

A check-in holds the customer's points account (``ledger.lock_account``) while it looks at the days
around it, so two requests of one customer never both check in on the same day. A make-up check-in
mends a streak: the days after it count on from it. It earns nothing itself (it would otherwise buy
bonuses with points); bonuses are paid on the days checked in as they happen.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Row, insert, select, update

from lifeloop.engagement.events import record_event
from lifeloop.engagement.points import ledger
from lifeloop.engagement.points.merges import merged_into
from lifeloop.engagement.points.models import checkins
from lifeloop.engagement.points.settings import PointsSettings, get_settings, streak_bonus, streak_cycle
from lifeloop.errors import Conflict, InvalidInput
from lifeloop.profiles.service import resolve_profile_id
from lifeloop.store.rows import IN_CHUNK
from lifeloop.workspaces.service import get_workspace

CHECKED_IN = "Checked In"  # the event lifeloop records; never a request to check in


@dataclass(frozen=True, slots=True)
class Checkin:
    profile_id: int
    day: date
    kind: str  # daily or makeup
    streak: int  # consecutive days ending on this day, as of the check-in
    points: int  # earned for it (daily points and streak bonus)
    cost: int  # paid for it (make-up)
    at: datetime
    already: bool = False  # this day was checked in before the request: nothing changed

    @classmethod
    def of(cls, row: Row[Any], *, already: bool = False) -> Checkin:
        return cls(row.profile_id, row.day, row.kind, row.streak, row.points, row.cost, row.at, already)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["day"] = self.day.isoformat()
        return out


def local_day(conn: Connection, workspace_id: int, at: datetime) -> date:
    """The day ``at`` falls on in the workspace's time zone."""
    return at.astimezone(ZoneInfo(get_workspace(conn, workspace_id).timezone)).date()


def _row(conn: Connection, workspace_id: int, profile_id: int, day: date) -> Row[Any] | None:
    return conn.execute(
        select(checkins).where(
            checkins.c.workspace_id == workspace_id,
            checkins.c.profile_id == profile_id,
            checkins.c.day == day,
        )
    ).first()


def _streak_before(conn: Connection, workspace_id: int, profile_id: int, day: date) -> int:
    before = _row(conn, workspace_id, profile_id, day - timedelta(days=1))
    return int(before.streak) if before is not None else 0


def _restreak_after(conn: Connection, workspace_id: int, profile_id: int, day: date, streak: int) -> None:
    """The days checked in right after ``day`` count on from its streak (a make-up joins two runs)."""
    rows = conn.execute(
        select(checkins.c.day, checkins.c.streak)
        .where(
            checkins.c.workspace_id == workspace_id, checkins.c.profile_id == profile_id, checkins.c.day > day
        )
        .order_by(checkins.c.day)
    ).all()
    expected, count = day + timedelta(days=1), streak + 1
    for row in rows:
        if row.day != expected:
            break
        if row.streak != count:
            conn.execute(
                update(checkins)
                .where(
                    checkins.c.workspace_id == workspace_id,
                    checkins.c.profile_id == profile_id,
                    checkins.c.day == row.day,
                )
                .values(streak=count)
            )
        expected, count = expected + timedelta(days=1), count + 1


def _enabled(settings: PointsSettings) -> None:
    if not settings.checkin["enabled"]:
        raise Conflict("check-in is turned off in this workspace", field="checkin.enabled")


def _insert(
    conn: Connection,
    workspace_id: int,
    profile_id: int,
    day: date,
    *,
    kind: str,
    streak: int,
    points: int,
    cost: int,
    key: str | None,
    now: datetime,
) -> Checkin:
    values = {
        "profile_id": profile_id,
        "day": day,
        "kind": kind,
        "streak": streak,
        "points": points,
        "cost": cost,
        "at": now,
    }
    conn.execute(insert(checkins).values(workspace_id=workspace_id, key=key, **values))
    _restreak_after(conn, workspace_id, profile_id, day, streak)
    record_event(
        conn,
        workspace_id,
        profile_id,
        CHECKED_IN,
        {"day": day.isoformat(), "kind": kind, "streak": streak, "points": points, "cost": cost},
        at=now,
        key=f"checkin:{profile_id}:{day.isoformat()}",
    )
    return Checkin(**values)  # type: ignore[arg-type]


def check_in(
    conn: Connection, workspace_id: int, profile_id: int, *, now: datetime, day: date | None = None
) -> Checkin:
    """Check the customer in for today (or ``day``, today or yesterday, for a late event); a second
    check-in on a day returns the first with ``already`` set and changes nothing."""
    settings = get_settings(conn, workspace_id)
    _enabled(settings)
    profile_id = resolve_profile_id(conn, workspace_id, profile_id)
    today = local_day(conn, workspace_id, now)
    day = day or today
    if not today - timedelta(days=1) <= day <= today:
        raise InvalidInput("a check-in is for today or yesterday; older days are made up", field="day")
    ledger.lock_account(conn, workspace_id, profile_id, now)
    if (done := _row(conn, workspace_id, profile_id, day)) is not None:
        return Checkin.of(done, already=True)
    streak = _streak_before(conn, workspace_id, profile_id, day) + 1
    daily = int(settings.rules["checkin"]["points"])
    bonus = streak_bonus(settings.checkin, streak)
    stamp = day.isoformat()
    if daily:
        ledger.award_points(
            conn,
            workspace_id,
            profile_id,
            daily,
            key=f"checkin:{profile_id}:{stamp}",
            reason="daily check-in",
            now=now,
        )
    if bonus:
        ledger.award_points(
            conn,
            workspace_id,
            profile_id,
            bonus,
            key=f"checkin-bonus:{profile_id}:{stamp}",
            reason=f"check-in streak day {streak}",
            now=now,
        )
    return _insert(
        conn,
        workspace_id,
        profile_id,
        day,
        kind="daily",
        streak=streak,
        points=daily + bonus,
        cost=0,
        key=None,
        now=now,
    )


def make_up(
    conn: Connection, workspace_id: int, profile_id: int, day: date, *, key: str, now: datetime
) -> Checkin:
    """Check the customer in for a missed ``day`` within the look-back, paying the make-up cost in points.

    Refused when the day is out of reach, already checked in, or the points are short; the same
    ``key`` again returns the first result."""
    if not isinstance(key, str) or not key.strip() or len(key) > 200:
        raise InvalidInput("key must be 1 to 200 characters", field="key")
    settings = get_settings(conn, workspace_id)
    _enabled(settings)
    profile_id = resolve_profile_id(conn, workspace_id, profile_id)
    if (done := _by_key(conn, workspace_id, key, profile_id, day)) is not None:
        return done
    today = local_day(conn, workspace_id, now)
    reach = int(settings.checkin["makeup_days"])
    if day >= today:
        raise InvalidInput(f"{day.isoformat()} is not a past day; check in instead", field="day")
    if (today - day).days > reach:
        raise InvalidInput(
            f"only the last {reach} days can be made up; {day.isoformat()} is older", field="day"
        )
    ledger.lock_account(conn, workspace_id, profile_id, now)
    if (done := _by_key(conn, workspace_id, key, profile_id, day)) is not None:
        return done
    if _row(conn, workspace_id, profile_id, day) is not None:
        raise Conflict(f"profile {profile_id} already checked in on {day.isoformat()}", field="day")
    cost = int(settings.checkin["makeup_cost"])
    if cost:
        ledger.spend_points(
            conn,
            workspace_id,
            profile_id,
            cost,
            key=f"makeup:{key}",
            reason=f"make-up check-in for {day.isoformat()}",
            now=now,
        )
    streak = _streak_before(conn, workspace_id, profile_id, day) + 1
    return _insert(
        conn,
        workspace_id,
        profile_id,
        day,
        kind="makeup",
        streak=streak,
        points=0,
        cost=cost,
        key=key,
        now=now,
    )


def _by_key(conn: Connection, workspace_id: int, key: str, profile_id: int, day: date) -> Checkin | None:
    row = conn.execute(
        select(checkins).where(checkins.c.workspace_id == workspace_id, checkins.c.key == key)
    ).first()
    if row is None:
        return None
    if (row.profile_id, row.day) != (profile_id, day):
        raise Conflict(
            f"the key {key!r} was already used to make up {row.day.isoformat()} for profile {row.profile_id}",
            field="key",
        )
    return Checkin.of(row, already=True)


def checkin_streaks(
    conn: Connection, workspace_id: int, profile_ids: Sequence[int], *, now: datetime
) -> dict[int, int]:
    """Each profile's current streak: days in a row ending today, or yesterday if not yet checked in
    today (0 when the streak is broken)."""
    today = local_day(conn, workspace_id, now)
    yesterday = today - timedelta(days=1)
    out = dict.fromkeys(profile_ids, 0)
    owner = {**{p: p for p in profile_ids}, **merged_into(conn, workspace_id, profile_ids)}
    unique = sorted(owner)
    for start in range(0, len(unique), IN_CHUNK):
        rows = conn.execute(
            select(checkins.c.profile_id, checkins.c.day, checkins.c.streak).where(
                checkins.c.workspace_id == workspace_id,
                checkins.c.profile_id.in_(unique[start : start + IN_CHUNK]),
                checkins.c.day.in_([today, yesterday]),
            )
        )
        for pid, _day, streak in sorted(rows, key=lambda r: r.day):  # today's row, if any, comes last
            out[owner[int(pid)]] = int(streak)
    return out


def streak_summary(conn: Connection, workspace_id: int, profile_id: int, *, now: datetime) -> dict[str, Any]:
    """What a customer's check-in page shows: today, the streak, the next bonus, the recent days."""
    settings = get_settings(conn, workspace_id)
    profile_id = resolve_profile_id(conn, workspace_id, profile_id)
    today = local_day(conn, workspace_id, now)
    streak = checkin_streaks(conn, workspace_id, [profile_id], now=now)[profile_id]
    checked_today = _row(conn, workspace_id, profile_id, today) is not None
    recent = conn.execute(
        select(checkins)
        .where(checkins.c.workspace_id == workspace_id, checkins.c.profile_id == profile_id)
        .order_by(checkins.c.day.desc())
        .limit(31)
    ).all()
    reach = int(settings.checkin["makeup_days"])
    done_days = {r.day for r in recent}
    missed = [
        (today - timedelta(days=n)).isoformat()
        for n in range(1, reach + 1)
        if today - timedelta(days=n) not in done_days
    ]
    cycle = streak_cycle(settings.checkin)
    upcoming = streak if checked_today else streak + 1  # the streak day the next check-in makes
    next_bonus = None
    if cycle:
        for ahead in range(cycle):
            day_number = upcoming + ahead
            if bonus := streak_bonus(settings.checkin, day_number):
                next_bonus = {"streak": day_number, "points": bonus}
                break
    return {
        "profile_id": profile_id,
        "today": today.isoformat(),
        "checked_in_today": checked_today,
        "streak": streak,
        "next_bonus": next_bonus,
        "can_make_up": missed,
        "makeup_cost": int(settings.checkin["makeup_cost"]),
        "recent": [Checkin.of(r).as_dict() for r in recent],
    }
