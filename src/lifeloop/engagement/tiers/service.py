"""Member tiers: the programme, each customer's tier from spend and points over a rolling window,
upgrades at once, downgrades only at review, benefits (bonus points on orders, coupons on upgrade) and
the monthly member day.

Spend is read from the customer's placed ``Order Completed`` events (``revenue``, else ``total``) less
``Order Refunded`` ones, so merged profiles count together (their events move to the survivor).
"""

from __future__ import annotations

import calendar
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_FLOOR, Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from lifeloop.engagement.events import record_event
from lifeloop.engagement.tiers.config import Tier, TierProgram, parse_program
from lifeloop.engagement.tiers.models import tier_changes, tier_members, tier_programs
from lifeloop.errors import LifeloopError, NotFound
from lifeloop.events.models import events
from lifeloop.events.own import savepoint
from lifeloop.profiles.models import profiles
from lifeloop.workspaces.service import get_workspace

log = logging.getLogger(__name__)

ORDER_COMPLETED = "Order Completed"
ORDER_REFUNDED = "Order Refunded"
TIER_CHANGED = "Tier Changed"


# The programme ----------------------------------------------------------------------------------
def set_program(conn: Connection, workspace_id: int, raw: Any, *, now: datetime) -> TierProgram:
    """Save the workspace's ladder and rules (checked first: a wrong field changes nothing)."""
    program = parse_program(raw)
    config = program.source
    found = conn.execute(
        update(tier_programs)
        .where(tier_programs.c.workspace_id == workspace_id)
        .values(config=config, updated_at=now)
    ).rowcount
    if not found:
        conn.execute(insert(tier_programs).values(workspace_id=workspace_id, config=config, updated_at=now))
    return program


def get_program(conn: Connection, workspace_id: int) -> TierProgram | None:
    config = conn.execute(
        select(tier_programs.c.config).where(tier_programs.c.workspace_id == workspace_id)
    ).scalar()
    return None if config is None else parse_program(config)


def require_program(conn: Connection, workspace_id: int) -> TierProgram:
    program = get_program(conn, workspace_id)
    if program is None:
        raise NotFound("this workspace has no tier programme; set one with PUT /api/v1/tiers/program")
    return program


# Figures over the window --------------------------------------------------------------------------
def amount_of(properties: dict[str, Any] | None) -> Decimal | None:
    """An order's (or refund's) amount: ``revenue``, else ``total``, else ``amount``; None if none is a
    number of at least 0."""
    for name in ("revenue", "total", "amount"):
        value = (properties or {}).get(name)
        if value is None or isinstance(value, bool):
            continue
        try:
            number = Decimal(str(value))
        except InvalidOperation:
            return None
        return number if number.is_finite() and number >= 0 else None
    return None


def spend_between(
    conn: Connection, workspace_id: int, profile_ids: Sequence[int], since: datetime, until: datetime
) -> dict[int, Decimal]:
    """Orders less refunds placed in (since, until], per profile (never below 0)."""
    spend = {pid: Decimal(0) for pid in profile_ids}
    if not profile_ids:
        return spend
    rows = conn.execute(
        select(events.c.profile_id, events.c.event, events.c.properties).where(
            events.c.workspace_id == workspace_id,
            events.c.profile_id.in_(list(profile_ids)),
            events.c.type == "track",
            events.c.event.in_([ORDER_COMPLETED, ORDER_REFUNDED]),
            events.c.timestamp > since,
            events.c.timestamp <= until,
        )
    )
    for row in rows:
        amount = amount_of(row.properties)
        if amount is not None:
            spend[row.profile_id] += amount if row.event == ORDER_COMPLETED else -amount
    return {pid: max(value, Decimal(0)) for pid, value in spend.items()}


def points_between(
    conn: Connection,
    program: TierProgram,
    workspace_id: int,
    profile_ids: Sequence[int],
    since: datetime,
    until: datetime,
) -> dict[int, int]:
    """Points earned in the window (asked of the points ledger only when a tier counts points)."""
    if not program.uses_points or not profile_ids:
        return {pid: 0 for pid in profile_ids}
    from lifeloop.engagement.points.ledger import earned_between

    # The ledger counts [since, until): a step past ``until`` counts the points earned at that moment.
    earned = earned_between(conn, workspace_id, list(profile_ids), since, until + timedelta(microseconds=1))
    return {pid: int(earned.get(pid, 0)) for pid in profile_ids}


# Who holds which tier ------------------------------------------------------------------------------
def tier_of(conn: Connection, workspace_id: int, profile_ids: Iterable[int]) -> dict[int, str | None]:
    """Each profile's tier key: its stored tier, else the ladder's first; None without a programme."""
    ids = list(dict.fromkeys(profile_ids))
    program = get_program(conn, workspace_id)
    if program is None:
        return dict.fromkeys(ids)
    held: dict[int, str | None] = dict.fromkeys(ids, program.lowest.key)
    for start in range(0, len(ids), 1000):
        rows = conn.execute(
            select(tier_members.c.profile_id, tier_members.c.tier).where(
                tier_members.c.workspace_id == workspace_id,
                tier_members.c.profile_id.in_(ids[start : start + 1000]),
            )
        )
        for row in rows:
            held[row.profile_id] = row.tier if program.tier(row.tier) else program.lowest.key
    return held


@dataclass(frozen=True, slots=True)
class Membership:
    tier: Tier
    since: datetime | None
    review_at: datetime | None


def _membership(
    conn: Connection, program: TierProgram, workspace_id: int, profile_id: int, *, now: datetime | None = None
) -> Membership:
    """The member's row, held until the transaction ends: one change of a member's tier at a time.
    With ``now`` a missing row is made first (at the first tier), so two first upgrades of one customer
    (an order and points awarded by the API) wait for each other instead of both inserting."""
    if now is not None:
        dialect_insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
        conn.execute(
            dialect_insert(tier_members)
            .values(
                workspace_id=workspace_id,
                profile_id=profile_id,
                tier=program.lowest.key,
                since=now,
                review_at=next_review(program, workspace_zone(conn, workspace_id), now, now),
                updated_at=now,
            )
            .on_conflict_do_nothing(index_elements=["workspace_id", "profile_id"])
        )
    row = conn.execute(
        select(tier_members)
        .where(tier_members.c.workspace_id == workspace_id, tier_members.c.profile_id == profile_id)
        .with_for_update()
    ).first()
    if row is None:
        return Membership(program.lowest, None, None)
    return Membership(program.tier(row.tier) or program.lowest, row.since, row.review_at)


def _require_profile(conn: Connection, workspace_id: int, profile_id: int) -> None:
    found = conn.execute(
        select(profiles.c.id).where(profiles.c.workspace_id == workspace_id, profiles.c.id == profile_id)
    ).first()
    if found is None:
        raise NotFound(f"no profile {profile_id} in this workspace")


def status(conn: Connection, workspace_id: int, profile_id: int, *, now: datetime) -> dict[str, Any]:
    """A customer's tier, since when, the figures of the window and what the next tier still asks."""
    _require_profile(conn, workspace_id, profile_id)
    program = get_program(conn, workspace_id)
    if program is None:  # no ladder: nobody holds a tier
        return {"profile_id": profile_id, "tier": None, "name": None, "benefits": [], "since": None}
    row = conn.execute(
        select(tier_members).where(
            tier_members.c.workspace_id == workspace_id, tier_members.c.profile_id == profile_id
        )
    ).first()
    tier = (program.tier(row.tier) if row else None) or program.lowest
    since = now - timedelta(days=program.window_days)
    spend = spend_between(conn, workspace_id, [profile_id], since, now)[profile_id]
    points = points_between(conn, program, workspace_id, [profile_id], since, now)[profile_id]
    following = program.tiers[tier.rank + 1] if tier.rank + 1 < len(program.tiers) else None
    progress: dict[str, Any] | None = None
    if following is not None:
        progress = {"tier": following.key, "name": following.name}
        if following.min_spend is not None:
            progress["spend_needed"] = str(max(following.min_spend - spend, Decimal(0)))
        if following.min_points is not None:
            progress["points_needed"] = max(following.min_points - points, 0)
    return {
        "profile_id": profile_id,
        "tier": tier.key,
        "name": tier.name,
        "benefits": list(tier.benefits),
        "since": row.since if row else None,
        "review_at": row.review_at if row else None,
        "window_days": program.window_days,
        "spend": str(spend),
        "points": points,
        "next": progress,
    }


def history(conn: Connection, workspace_id: int, profile_id: int) -> list[dict[str, Any]]:
    _require_profile(conn, workspace_id, profile_id)
    rows = conn.execute(
        select(tier_changes)
        .where(tier_changes.c.workspace_id == workspace_id, tier_changes.c.profile_id == profile_id)
        .order_by(tier_changes.c.at, tier_changes.c.id)
    )
    return [
        {
            "from": r.from_tier,
            "to": r.to_tier,
            "direction": r.direction,
            "reason": r.reason,
            "at": r.at,
        }
        for r in rows
    ]


# Changes ----------------------------------------------------------------------------------------
def workspace_zone(conn: Connection, workspace_id: int) -> ZoneInfo:
    return ZoneInfo(get_workspace(conn, workspace_id).timezone)


def next_review(program: TierProgram, zone: ZoneInfo, since: datetime, now: datetime) -> datetime:
    """When a tier reached at ``since`` is next reviewed: the review day of a coming month (midnight in
    the workspace's zone), or the tier's anniversary."""
    local = now.astimezone(zone)
    if program.review_every == "month":
        candidate = local.replace(day=program.review_day, hour=0, minute=0, second=0, microsecond=0)
        if candidate <= local:
            year, month = (local.year + 1, 1) if local.month == 12 else (local.year, local.month + 1)
            candidate = candidate.replace(year=year, month=month)
        return candidate.astimezone(since.tzinfo)
    start = since.astimezone(zone)
    years = 1
    while True:
        year = start.year + years
        day = min(start.day, calendar.monthrange(year, start.month)[1])
        candidate = start.replace(year=year, day=day)
        if candidate > local:
            return candidate.astimezone(since.tzinfo)
        years += 1


def _change(
    conn: Connection,
    program: TierProgram,
    workspace_id: int,
    profile_id: int,
    current: Membership,
    target: Tier,
    *,
    reason: str,
    key: str,
    now: datetime,
) -> dict[str, Any] | None:
    """Move a member to ``target`` once per ``key``: the row, the history, the event, the upgrade's
    coupons."""
    done = conn.execute(
        select(tier_changes.c.id).where(
            tier_changes.c.workspace_id == workspace_id, tier_changes.c.key == key
        )
    ).first()
    if done is not None:
        return None
    direction = "up" if target.rank > current.tier.rank else "down"
    review_at = next_review(program, workspace_zone(conn, workspace_id), now, now)
    conn.execute(
        update(tier_members)
        .where(tier_members.c.workspace_id == workspace_id, tier_members.c.profile_id == profile_id)
        .values(tier=target.key, since=now, review_at=review_at, updated_at=now)
    )
    conn.execute(
        insert(tier_changes).values(
            workspace_id=workspace_id,
            profile_id=profile_id,
            from_tier=current.tier.key,
            to_tier=target.key,
            direction=direction,
            reason=reason,
            key=key,
            at=now,
        )
    )
    change = {
        "from": current.tier.key,
        "to": target.key,
        "from_name": current.tier.name,
        "to_name": target.name,
        "direction": direction,
        "reason": reason,
    }
    record_event(conn, workspace_id, profile_id, TIER_CHANGED, change, at=now, key=f"tier:{key}")
    if direction == "up":
        for template in target.upgrade_coupons:
            issue_reward_coupon(
                conn, workspace_id, profile_id, template, key=f"tier-up:{key}:{template}", now=now
            )
    return change


def issue_reward_coupon(
    conn: Connection, workspace_id: int, profile_id: int, template: str, *, key: str, now: datetime
) -> bool:
    """Issue a benefit coupon in a savepoint: a template that is gone or used up is logged and skipped,
    so an order is never refused because its benefit could not be given."""
    from lifeloop.engagement.coupons.service import issue_coupon

    try:
        with savepoint(conn):  # a refused coupon takes its events with it
            issue_coupon(conn, workspace_id, profile_id, template, key=key, now=now, source="tier")
    except LifeloopError as error:
        log.warning("tier coupon %s for profile %s not issued: %s", template, profile_id, error.message)
        return False
    return True


def reconsider(
    conn: Connection, workspace_id: int, profile_id: int, *, now: datetime, key: str, reason: str
) -> dict[str, Any] | None:
    """Upgrade at once when the window's figures reach a higher tier (never lowers one)."""
    program = get_program(conn, workspace_id)
    if program is None:
        return None
    since = now - timedelta(days=program.window_days)
    spend = spend_between(conn, workspace_id, [profile_id], since, now)[profile_id]
    points = points_between(conn, program, workspace_id, [profile_id], since, now)[profile_id]
    target = program.qualifying(spend, points)
    held = program.tier(tier_of(conn, workspace_id, [profile_id])[profile_id]) or program.lowest
    if target.rank <= held.rank:
        return None  # the usual case, decided without taking the member's row
    current = _membership(conn, program, workspace_id, profile_id, now=now)
    if target.rank <= current.tier.rank:
        return None
    if reason == "points" and program.qualifying(spend, 0).rank >= target.rank:
        # The order's own points arrive (as ``Points Earned``) before the order reaches tiers: what
        # raised the customer is still the spend.
        reason = "order"
    return _change(conn, program, workspace_id, profile_id, current, target, reason=reason, key=key, now=now)


def review(conn: Connection, workspace_id: int, profile_id: int, *, now: datetime) -> dict[str, Any] | None:
    """A due review: lower the tier when the window no longer holds it (one step, or to the tier it
    qualifies for), raise it if it qualifies higher, and set the next review either way."""
    program = get_program(conn, workspace_id)
    if program is None:
        return None
    current = _membership(conn, program, workspace_id, profile_id)
    if current.review_at is None or current.review_at > now:
        return None
    since = now - timedelta(days=program.window_days)
    spend = spend_between(conn, workspace_id, [profile_id], since, now)[profile_id]
    points = points_between(conn, program, workspace_id, [profile_id], since, now)[profile_id]
    qualifying = program.qualifying(spend, points)
    key = f"review:{profile_id}:{current.review_at.isoformat()}"
    if qualifying.rank < current.tier.rank:
        target = qualifying if program.downgrade == "to_qualifying" else program.tiers[current.tier.rank - 1]
        return _change(
            conn, program, workspace_id, profile_id, current, target, reason="review", key=key, now=now
        )
    if qualifying.rank > current.tier.rank:
        return _change(
            conn, program, workspace_id, profile_id, current, qualifying, reason="review", key=key, now=now
        )
    conn.execute(
        update(tier_members)
        .where(tier_members.c.workspace_id == workspace_id, tier_members.c.profile_id == profile_id)
        .values(
            review_at=next_review(program, workspace_zone(conn, workspace_id), current.since or now, now),
            updated_at=now,
        )
    )
    return None


# Benefits on orders -------------------------------------------------------------------------------
def is_member_day(program: TierProgram, zone: ZoneInfo, at: datetime) -> bool:
    return program.member_day is not None and at.astimezone(zone).day == program.member_day.day


def order_bonus(
    conn: Connection,
    workspace_id: int,
    profile_id: int,
    properties: dict[str, Any],
    *,
    message_id: str,
    at: datetime,
    now: datetime,
) -> int:
    """Bonus points of an order: its base points (amount × the points programme's order rate, or the
    tier programme's ``points_per_unit``) times the tier's multiplier times the member day's (on that
    day, in the workspace's zone), less the base the points rules already give.
    Awarded once per order (the key is the event's message id)."""
    program = get_program(conn, workspace_id)
    amount = amount_of(properties)
    if program is None or amount is None:
        return 0
    held = tier_of(conn, workspace_id, [profile_id])[profile_id]
    tier = program.tier(held) or program.lowest
    multiplier = tier.points_multiplier
    if program.member_day is not None and is_member_day(program, workspace_zone(conn, workspace_id), at):
        multiplier *= program.member_day.points_multiplier
    rate = program.points_per_unit
    if rate is None:
        from lifeloop.engagement.points.settings import get_settings

        rate = Decimal(str(get_settings(conn, workspace_id).rules["order"]["rate"]))
    bonus = int((amount * rate * (multiplier - 1)).to_integral_value(ROUND_FLOOR))
    if bonus <= 0:
        return 0
    from lifeloop.engagement.points.ledger import award_points

    reason = "tier bonus" if multiplier == tier.points_multiplier else "tier and member day bonus"
    if tier.points_multiplier == 1:
        reason = "member day bonus"
    award_points(
        conn, workspace_id, profile_id, bonus, key=f"tier-bonus:{message_id}", reason=reason, now=now
    )
    return bonus
