"""The engagement programme: coupons, points, check-in, member tiers, referrals and advisors.

Importing the package subscribes its reactions to lifeloop's own events (tags, stages, segments), so
that, for example, a VIP tag creates the advisor's follow-up task in the transaction that adds it.
It also registers the condition functions ``points()``, ``tier()``, ``coupon_unused(…)`` and
``checkin_streak()`` with ``conditions.facts`` (conditions cannot import the programme, which builds on
them), and re-checks the stages and audiences that read them when the programme's own events land.
"""

from __future__ import annotations

from lifeloop.engagement.facts import register_facts
from lifeloop.engagement.freshness import recheck_after_programme_events
from lifeloop.engagement.reactions import on_own_events
from lifeloop.events.own import subscribe

subscribe(on_own_events)
register_facts()
subscribe(recheck_after_programme_events)
