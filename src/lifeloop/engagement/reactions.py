"""How the engagement programme hears about events, in the transaction that places them.

Ingested events reach ``react`` from the resolver (``profiles.resolver``), after stages and audiences
and before journeys, so a journey triggered by an order sees the points and coupons it earned. Events
lifeloop records itself (``Tag Added``, ``Stage Entered``…) reach ``on_own_events``. Both hand the same
``PlacedEvent`` list to each part of the programme, in the order of ``_reactions``.

A reaction must be idempotent per event (a key derived from ``message_id``) and must not react to the
events the programme records itself (``Coupon …``, ``Points …``, ``Tier Changed``…), which come back
through ``on_own_events``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from lifeloop.events.messages import Message
from lifeloop.events.own import gathered
from lifeloop.profiles.computed import event_name
from lifeloop.store.schema import utcnow


@dataclass(frozen=True, slots=True)
class PlacedEvent:
    """One event as it was placed on its profile; ``name`` is the track event's name (or the type of
    an identify / page / screen call, as ``profiles.computed.event_name`` gives it)."""

    profile_id: int
    name: str
    properties: dict[str, Any]
    timestamp: datetime
    message_id: str


Reaction = Callable[[Connection, int, Sequence[PlacedEvent], datetime], None]


def _reactions() -> list[Reaction]:
    """Each part of the programme that reacts to events, in the order they react: an order redeems its
    coupon before it earns points, points count before tiers are looked at, referrals see the first
    purchase, and advisors' task rules see everything before them."""
    from lifeloop.engagement.advisors import hooks as advisors
    from lifeloop.engagement.coupons import hooks as coupons
    from lifeloop.engagement.points import hooks as points
    from lifeloop.engagement.referrals import hooks as referrals
    from lifeloop.engagement.tiers import hooks as tiers

    return [coupons.react, points.react, tiers.react, referrals.react, advisors.react]


def react(conn: Connection, workspace_id: int, events: Sequence[PlacedEvent], *, now: datetime) -> None:
    """Let every part of the programme react to events just placed on their profiles."""
    if not events:
        return
    with gathered(conn, workspace_id):  # the programme's events reach their listeners in one batch
        for reaction in _reactions():
            reaction(conn, workspace_id, events, now)


def on_own_events(conn: Connection, workspace_id: int, placed: Sequence[tuple[int, Message]]) -> None:
    """``events.own`` listener: the same reactions for the events lifeloop records itself."""
    events = [
        PlacedEvent(pid, event_name(m.type, m.event), dict(m.properties or {}), m.timestamp, m.message_id)
        for pid, m in placed
    ]
    react(conn, workspace_id, events, now=utcnow())
