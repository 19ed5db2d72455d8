"""The customer page's engagement panel: points balance and recent ledger entries, tier, coupons held,
check-in streak, advisor and open tasks — read by the functions behind the REST routes of each part."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from lifeloop.engagement.advisors import service as advisors
from lifeloop.engagement.advisors.assignment import current_assignment
from lifeloop.engagement.advisors.models import OPEN_STATUSES
from lifeloop.engagement.advisors.tasks import list_tasks
from lifeloop.engagement.coupons.service import coupons_of
from lifeloop.engagement.points import checkin, ledger
from lifeloop.engagement.tiers import service as tiers

RECENT_ENTRIES = 5
COUPON_ROWS = 20


def engagement_panel(
    conn: Connection, workspace_id: int, profile_id: int, *, now: datetime
) -> dict[str, Any]:
    """What ``customers_engagement.html`` shows of one (surviving) profile."""
    totals = ledger.account_totals(conn, workspace_id, profile_id)
    assignment = current_assignment(conn, workspace_id, profile_id)
    advisor = (
        advisors.get_advisor(conn, workspace_id, assignment.advisor_id)
        if assignment is not None and assignment.advisor_id is not None
        else None
    )
    open_tasks = [
        t for t in list_tasks(conn, workspace_id, now=now, profile_id=profile_id) if t.status in OPEN_STATUSES
    ]
    streak = checkin.streak_summary(conn, workspace_id, profile_id, now=now)
    return {
        "points": {
            "balance": ledger.balance(conn, workspace_id, profile_id, now=now),
            **totals,
            "recent": ledger.history(conn, workspace_id, profile_id, limit=RECENT_ENTRIES),
        },
        "tier": tiers.status(conn, workspace_id, profile_id, now=now),
        "coupons": coupons_of(conn, workspace_id, profile_id, now=now)[:COUPON_ROWS],
        "checkin": {"streak": streak["streak"], "today": streak["checked_in_today"]},
        "advisor": advisor,
        "open_tasks": open_tasks,
        "now": now,
    }
