"""The monthly member day (会员日): on its day, in the workspace's time zone, each tier's members get
that tier's member-day coupons, once per month. (The day's points multiplier is applied per order, see
``service.order_bonus``.)"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, insert, select

from lifeloop.engagement.tiers.config import TierProgram
from lifeloop.engagement.tiers.models import member_days, tier_members
from lifeloop.engagement.tiers.service import issue_reward_coupon, workspace_zone
from lifeloop.profiles.models import profiles


def members_by_tier(conn: Connection, program: TierProgram, workspace_id: int) -> dict[str, list[int]]:
    """Every live profile under its tier (profiles without a stored tier hold the first one)."""
    held: dict[int, str] = {}
    for row in conn.execute(
        select(tier_members.c.profile_id, tier_members.c.tier).where(
            tier_members.c.workspace_id == workspace_id
        )
    ):
        held[row.profile_id] = row.tier if program.tier(row.tier) else program.lowest.key
    grouped: dict[str, list[int]] = {t.key: [] for t in program.tiers}
    if program.lowest.member_day_coupons:
        everyone = conn.execute(
            select(profiles.c.id)
            .where(profiles.c.workspace_id == workspace_id, profiles.c.merged_into.is_(None))
            .order_by(profiles.c.id)
        ).scalars()
        for pid in everyone:
            grouped[held.get(pid, program.lowest.key)].append(pid)
    else:
        for pid, tier in sorted(held.items()):
            grouped[tier].append(pid)
    return grouped


def month_due(conn: Connection, program: TierProgram, workspace_id: int, now: datetime) -> str | None:
    """The month (YYYY-MM) whose member day is today and has not run yet, else None."""
    if program.member_day is None or not any(t.member_day_coupons for t in program.tiers):
        return None
    local = now.astimezone(workspace_zone(conn, workspace_id))
    if local.day != program.member_day.day:
        return None
    month = local.strftime("%Y-%m")
    done = conn.execute(
        select(member_days.c.month).where(
            member_days.c.workspace_id == workspace_id, member_days.c.month == month
        )
    ).first()
    return None if done else month


def run_member_day(conn: Connection, program: TierProgram, workspace_id: int, now: datetime) -> int:
    """Issue the member day's coupons if today is the day and it has not run this month; how many were
    issued. Each coupon's key names the month, so a run cut short and repeated issues nothing twice."""
    month = month_due(conn, program, workspace_id, now)
    if month is None:
        return 0
    issued = 0
    grouped = members_by_tier(conn, program, workspace_id)
    for tier in program.tiers:
        for pid in grouped[tier.key]:
            for template in tier.member_day_coupons:
                key = f"member-day:{month}:{pid}:{template}"
                issued += issue_reward_coupon(conn, workspace_id, pid, template, key=key, now=now)
    conn.execute(
        insert(member_days).values(workspace_id=workspace_id, month=month, coupons_issued=issued, done_at=now)
    )
    return issued
