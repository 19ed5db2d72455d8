"""The events the programme records on profiles (``Coupon Issued``, ``Points Earned``, ``Tier Changed``…).

Each one's ``message_id`` is derived from the operation's own key, so an operation retried with the
same key records its event once (the events table ignores a repeated message id).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from lifeloop.events.messages import Message
from lifeloop.events.own import record_own_events


def record_event(
    conn: Connection,
    workspace_id: int,
    profile_id: int,
    name: str,
    properties: dict[str, Any],
    *,
    at: datetime,
    key: str,
) -> None:
    """Record one programme event on a profile, in the caller's transaction (journeys see it there)."""
    message = Message(
        type="track",
        message_id=f"engagement:{key}"[:255],
        timestamp=at,
        received_at=at,
        event=name,
        properties=properties,
    )
    record_own_events(conn, workspace_id, [(profile_id, message)])
