"""Time-driven work of the engagement programme (coupon and points expiry, tier reviews, member days),
run by the worker's sweep (``lifeloop.worker``) and by ``lifeloop worker --once``."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy import Engine

from lifeloop.store.schema import utcnow

# Each sweep takes the engine and the moment to sweep at, and returns how many things it changed.
Sweep = Callable[[Engine, datetime], int]


def _sweeps() -> list[Sweep]:
    """Each part of the programme's sweep, in the order they run (expiry before tier reviews)."""
    from lifeloop.engagement.advisors import hooks as advisors
    from lifeloop.engagement.coupons import hooks as coupons
    from lifeloop.engagement.points import hooks as points
    from lifeloop.engagement.referrals import hooks as referrals
    from lifeloop.engagement.tiers import hooks as tiers

    return [coupons.sweep, points.sweep, tiers.sweep, referrals.sweep, advisors.sweep]


def sweep(engine: Engine, now: datetime | None = None) -> int:
    """Run every sweep of the programme at ``now`` (default: the wall clock); how many things changed."""
    now = now or utcnow()
    return sum(each(engine, now) for each in _sweeps())
