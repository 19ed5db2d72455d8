"""Points (FIFO lots, spends, expiry), daily check-in with streaks, new-user tasks.

What other parts and the journey engine call, in one place: ``award_points``, ``spend_points``,
``balance``, ``balances``, ``earned_between`` (the ledger) and ``checkin_streaks`` (check-in).
"""

from __future__ import annotations

from lifeloop.engagement.points.checkin import checkin_streaks
from lifeloop.engagement.points.ledger import (
    PointsEntry,
    award_points,
    balance,
    balances,
    earned_between,
    spend_points,
)

__all__ = [
    "PointsEntry",
    "award_points",
    "balance",
    "balances",
    "checkin_streaks",
    "earned_between",
    "spend_points",
]
