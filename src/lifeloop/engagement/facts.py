"""The programme's facts in the condition language: ``points()``, ``tier()``, ``coupon_unused(…)``,
``checkin_streak()`` (registered with ``conditions.facts`` when ``lifeloop.engagement`` is imported).

``conditions`` is imported by lifecycle, audience and journeys, which the programme builds on, so it
cannot import the programme: the programme registers these providers with it instead. Each answers
exactly what its part's own read answers (``balances``, ``tier_of``, ``unused_coupons``,
``checkin_streaks``), a profile merged into another counting for the survivor as there, and compiles
the same to SQL for segments and batch recomputes.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    ColumnElement,
    Connection,
    Integer,
    Select,
    String,
    and_,
    case,
    func,
    literal,
    null,
    or_,
    select,
)

from lifeloop.conditions.ast import Fact
from lifeloop.conditions.facts import Owned, register
from lifeloop.engagement.coupons.models import coupon_templates, coupons
from lifeloop.engagement.coupons.service import ISSUED, unused_coupons
from lifeloop.engagement.points import balances, checkin_streaks
from lifeloop.engagement.points.models import checkins, points_lots
from lifeloop.engagement.tiers.models import tier_members
from lifeloop.engagement.tiers.service import get_program, tier_of
from lifeloop.profiles.models import profiles
from lifeloop.store.schema import UTCDateTime
from lifeloop.workspaces.service import get_workspace


def _held(column: Any, workspace_id: int, owned: Owned) -> ColumnElement[bool]:
    """Rows (``column``: their profile id) of the outer profile or of a profile merged into it."""
    merged = profiles.alias("merged")
    merged_ids = select(merged.c.id).where(
        merged.c.workspace_id == workspace_id, *owned(merged.c.merged_into)
    )
    return or_(and_(*owned(column)), column.in_(merged_ids))


def _owner(column: Any, workspace_id: int) -> tuple[Any, Any]:
    """The live profile holding rows of ``column`` (itself or the one it was merged into), and the join."""
    holder = profiles.alias("holder")
    on = and_(holder.c.workspace_id == workspace_id, holder.c.id == column)
    return func.coalesce(holder.c.merged_into, holder.c.id), (holder, on)


def _time(moment: datetime) -> ColumnElement[Any]:
    return literal(moment, UTCDateTime())


def _unexpired(column: Any, now: datetime) -> ColumnElement[bool]:
    return or_(column.is_(None), column > _time(now))


class Points:
    def values(
        self, conn: Connection, workspace_id: int, profile_ids: Sequence[int], fact: Fact, *, now: datetime
    ) -> dict[int, Any]:
        return dict(balances(conn, workspace_id, profile_ids, now=now))

    def sql(
        self, conn: Connection, workspace_id: int, fact: Fact, *, now: datetime, owned: Owned
    ) -> ColumnElement[Any]:
        lot = points_lots.c
        total = select(func.sum(lot.remaining)).where(
            lot.workspace_id == workspace_id,
            _held(lot.profile_id, workspace_id, owned),
            lot.remaining > 0,
            _unexpired(lot.expires_at, now),
        )
        return func.coalesce(total.scalar_subquery(), 0)

    def _expiring(self, workspace_id: int, now: datetime) -> list[ColumnElement[bool]]:
        lot = points_lots.c
        return [lot.workspace_id == workspace_id, lot.remaining > 0, lot.expires_at > _time(now)]

    def next_change(
        self, conn: Connection, workspace_id: int, profile_id: int, fact: Fact, *, now: datetime
    ) -> datetime | None:
        lot = points_lots.c
        query = select(func.min(lot.expires_at)).where(
            *self._expiring(workspace_id, now), lot.profile_id.in_(_holders(conn, workspace_id, profile_id))
        )
        return conn.execute(query).scalar()

    def change_moments(
        self, conn: Connection, workspace_id: int, fact: Fact, *, now: datetime, low: int, high: int
    ) -> Select[Any] | None:
        lot = points_lots.c
        owner, (holder, on) = _owner(lot.profile_id, workspace_id)
        return (
            select(owner, func.min(lot.expires_at))
            .select_from(points_lots.join(holder, on))
            .where(*self._expiring(workspace_id, now), owner >= low, owner <= high)
            .group_by(owner)
        )


class Tier:
    def values(
        self, conn: Connection, workspace_id: int, profile_ids: Sequence[int], fact: Fact, *, now: datetime
    ) -> dict[int, Any]:
        return dict(tier_of(conn, workspace_id, profile_ids))

    def sql(
        self, conn: Connection, workspace_id: int, fact: Fact, *, now: datetime, owned: Owned
    ) -> ColumnElement[Any]:
        # The ladder is the workspace's setting: read once here and baked in, as tier_of reads it.
        program = get_program(conn, workspace_id)
        if program is None:
            return null().cast(String())
        lowest = literal(program.lowest.key, String())
        m = tier_members.c
        known = case((m.tier.in_([t.key for t in program.tiers]), m.tier), else_=lowest)
        stored = select(known).where(m.workspace_id == workspace_id, *owned(m.profile_id))
        return func.coalesce(stored.scalar_subquery(), lowest, type_=String())

    def next_change(
        self, conn: Connection, workspace_id: int, profile_id: int, fact: Fact, *, now: datetime
    ) -> datetime | None:
        return None  # a tier changes only with a Tier Changed event (reviews are the tiers' sweep)

    def change_moments(
        self, conn: Connection, workspace_id: int, fact: Fact, *, now: datetime, low: int, high: int
    ) -> Select[Any] | None:
        return None


class UnusedCoupons:
    def values(
        self, conn: Connection, workspace_id: int, profile_ids: Sequence[int], fact: Fact, *, now: datetime
    ) -> dict[int, Any]:
        return dict(unused_coupons(conn, workspace_id, profile_ids, now=now, template_key=fact.template))

    def _of_template(self, workspace_id: int, fact: Fact) -> list[ColumnElement[bool]]:
        if fact.template is None:
            return []
        t = coupon_templates.c
        template_ids = select(t.id).where(t.workspace_id == workspace_id, t.key == fact.template)
        return [coupons.c.template_id.in_(template_ids)]

    def sql(
        self, conn: Connection, workspace_id: int, fact: Fact, *, now: datetime, owned: Owned
    ) -> ColumnElement[Any]:
        c = coupons.c
        held = select(func.count()).where(
            c.workspace_id == workspace_id,
            _held(c.profile_id, workspace_id, owned),
            c.status == ISSUED,
            _unexpired(c.expires_at, now),
            *self._of_template(workspace_id, fact),
        )
        return held.scalar_subquery()

    def _expiring(self, workspace_id: int, fact: Fact, now: datetime) -> list[ColumnElement[bool]]:
        c = coupons.c
        return [
            c.workspace_id == workspace_id,
            c.status == ISSUED,
            c.expires_at > _time(now),
            *self._of_template(workspace_id, fact),
        ]

    def next_change(
        self, conn: Connection, workspace_id: int, profile_id: int, fact: Fact, *, now: datetime
    ) -> datetime | None:
        c = coupons.c
        query = select(func.min(c.expires_at)).where(
            *self._expiring(workspace_id, fact, now),
            c.profile_id.in_(_holders(conn, workspace_id, profile_id)),
        )
        return conn.execute(query).scalar()

    def change_moments(
        self, conn: Connection, workspace_id: int, fact: Fact, *, now: datetime, low: int, high: int
    ) -> Select[Any] | None:
        c = coupons.c
        owner, (holder, on) = _owner(c.profile_id, workspace_id)
        return (
            select(owner, func.min(c.expires_at))
            .select_from(coupons.join(holder, on))
            .where(*self._expiring(workspace_id, fact, now), owner >= low, owner <= high)
            .group_by(owner)
        )


class CheckinStreak:
    """The streak ends today, or yesterday while today's check-in is still to come; at each local
    midnight a streak ending yesterday breaks, so that midnight is when it can change by time alone."""

    def values(
        self, conn: Connection, workspace_id: int, profile_ids: Sequence[int], fact: Fact, *, now: datetime
    ) -> dict[int, Any]:
        return dict(checkin_streaks(conn, workspace_id, profile_ids, now=now))

    def _days(self, conn: Connection, workspace_id: int, now: datetime) -> tuple[date, date, datetime]:
        """Today and yesterday in the workspace's zone, and the next local midnight (in UTC)."""
        zone = ZoneInfo(get_workspace(conn, workspace_id).timezone)
        today = now.astimezone(zone).date()
        midnight = datetime.combine(today + timedelta(days=1), time(), zone).astimezone(now.tzinfo)
        return today, today - timedelta(days=1), midnight

    def sql(
        self, conn: Connection, workspace_id: int, fact: Fact, *, now: datetime, owned: Owned
    ) -> ColumnElement[Any]:
        today, yesterday, _ = self._days(conn, workspace_id, now)
        k = checkins.c
        latest = (
            select(k.streak)
            .where(
                k.workspace_id == workspace_id,
                _held(k.profile_id, workspace_id, owned),
                k.day.in_([today, yesterday]),
            )
            .order_by(k.day.desc(), k.streak.desc())
            .limit(1)
        )
        return func.coalesce(latest.scalar_subquery(), literal(0, Integer()))

    def next_change(
        self, conn: Connection, workspace_id: int, profile_id: int, fact: Fact, *, now: datetime
    ) -> datetime | None:
        today, yesterday, midnight = self._days(conn, workspace_id, now)
        k = checkins.c
        recent = select(k.day).where(
            k.workspace_id == workspace_id,
            k.profile_id.in_(_holders(conn, workspace_id, profile_id)),
            k.day.in_([today, yesterday]),
        )
        return midnight if conn.execute(recent.limit(1)).first() is not None else None

    def change_moments(
        self, conn: Connection, workspace_id: int, fact: Fact, *, now: datetime, low: int, high: int
    ) -> Select[Any] | None:
        today, yesterday, midnight = self._days(conn, workspace_id, now)
        k = checkins.c
        owner, (holder, on) = _owner(k.profile_id, workspace_id)
        return (
            select(owner, func.min(_time(midnight)))
            .select_from(checkins.join(holder, on))
            .where(k.workspace_id == workspace_id, k.day.in_([today, yesterday]), owner >= low, owner <= high)
            .group_by(owner)
        )


def _holders(conn: Connection, workspace_id: int, profile_id: int) -> list[int]:
    """A profile and those merged into it."""
    merged = conn.execute(
        select(profiles.c.id).where(
            profiles.c.workspace_id == workspace_id, profiles.c.merged_into == profile_id
        )
    ).scalars()
    return [profile_id, *merged]


def register_facts() -> None:
    register("points", Points())
    register("tier", Tier())
    register("coupon_unused", UnusedCoupons())
    register("checkin_streak", CheckinStreak())
