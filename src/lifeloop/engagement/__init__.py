"""The engagement programme: coupons, points, check-in, member tiers, referrals and advisors.

Importing the package subscribes its reactions to lifeloop's own events (tags, stages, segments), so
that, for example, a VIP tag creates the advisor's follow-up task in the transaction that adds it.
"""

from __future__ import annotations

from lifeloop.engagement.reactions import on_own_events
from lifeloop.events.own import subscribe

subscribe(on_own_events)
