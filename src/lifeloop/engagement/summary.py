"""Counts across the programme for operators' overviews (the console's engagement pages): coupons per
template by status, members per tier, each advisor's customers and open tasks. Read-only, a few grouped
queries per page whatever the number of customers."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, select

from lifeloop.engagement.advisors.models import advisor_assignments, advisor_tasks
from lifeloop.engagement.coupons.models import coupons
from lifeloop.engagement.tiers.config import TierProgram
from lifeloop.engagement.tiers.models import tier_members
from lifeloop.profiles.models import profiles

OPEN_TASK_STATUSES = ("open", "in_progress")


def coupon_counts(conn: Connection, workspace_id: int, *, now: datetime) -> dict[int, dict[str, int]]:
    """Per template id: coupons ``issued`` (ever), ``redeemed``, ``expired`` (also those past their end the
    sweep has not marked yet) and ``unused`` (still redeemable or not started)."""
    c = coupons.c
    past_end = (c.status == "issued") & c.expires_at.is_not(None) & (c.expires_at <= now)
    rows = conn.execute(
        select(c.template_id, c.status, past_end.label("past_end"), func.count().label("n"))
        .where(c.workspace_id == workspace_id)
        .group_by(c.template_id, c.status, past_end)
    )
    counts: dict[int, dict[str, int]] = {}
    for row in rows:
        entry = counts.setdefault(row.template_id, {"issued": 0, "redeemed": 0, "expired": 0, "unused": 0})
        status = "expired" if row.past_end else row.status
        entry["issued"] += row.n
        entry["unused" if status == "issued" else status] += row.n
    return counts


def tier_counts(conn: Connection, workspace_id: int, program: TierProgram) -> dict[str, int]:
    """Customers (live profiles) per tier; those without a stored tier hold the lowest one."""
    t, p = tier_members.c, profiles.c
    held = dict.fromkeys((tier.key for tier in program.tiers), 0)
    stored = conn.execute(
        select(t.tier, func.count().label("n"))
        .select_from(tier_members.join(profiles, p.id == t.profile_id))
        .where(t.workspace_id == workspace_id, p.workspace_id == workspace_id, p.merged_into.is_(None))
        .group_by(t.tier)
    )
    for row in stored:
        key = row.tier if row.tier in held else program.lowest.key  # a tier since taken off the ladder
        held[key] += row.n
    everyone = conn.execute(
        select(func.count()).where(p.workspace_id == workspace_id, p.merged_into.is_(None))
    ).scalar_one()
    held[program.lowest.key] += max(everyone - sum(held.values()), 0)
    return held


def advisor_load(conn: Connection, workspace_id: int, *, now: datetime) -> dict[int, dict[str, Any]]:
    """Per advisor id: how many customers they serve, their open tasks and how many of those are overdue."""
    a, t = advisor_assignments.c, advisor_tasks.c
    load: dict[int, dict[str, Any]] = {}

    def entry(advisor_id: int) -> dict[str, Any]:
        return load.setdefault(advisor_id, {"customers": 0, "open_tasks": 0, "overdue": 0})

    for row in conn.execute(
        select(a.advisor_id, func.count().label("n"))
        .where(a.workspace_id == workspace_id, a.advisor_id.is_not(None))
        .group_by(a.advisor_id)
    ):
        entry(row.advisor_id)["customers"] = row.n
    overdue = t.due_at.is_not(None) & (t.due_at < now)
    for row in conn.execute(
        select(t.advisor_id, overdue.label("late"), func.count().label("n"))
        .where(t.workspace_id == workspace_id, t.advisor_id.is_not(None), t.status.in_(OPEN_TASK_STATUSES))
        .group_by(t.advisor_id, overdue)
    ):
        entry(row.advisor_id)["open_tasks"] += row.n
        if row.late:
            entry(row.advisor_id)["overdue"] += row.n
    return load
