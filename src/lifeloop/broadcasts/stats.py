"""Statistics of a broadcast: audience, what became of its messages, and what recipients did after.

Clicks, replies and conversions count within the conversion window after the send (for a best-hour
broadcast, after its window's start until the window's end plus the conversion window). The holdout
group, who were sent nothing, is measured over the same window: the comparison is each variant's
conversion against it, with the two-proportion test the journeys use.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, select

from lifeloop.broadcasts.models import HOLDOUT, broadcast_recipients
from lifeloop.broadcasts.service import get_broadcast, in_utc, message_ids, workspace_zone
from lifeloop.experiments import versus_control
from lifeloop.store.schema import utcnow

CLICKED, REPLIED = "Message Clicked", "Message Received"


def broadcast_stats(
    conn: Connection, workspace_id: int, key: str, *, now: datetime | None = None
) -> dict[str, Any]:
    from lifeloop.messaging.service import outcome_counts

    now = now or utcnow()
    broadcast = get_broadcast(conn, workspace_id, key)
    definition = broadcast.parsed()
    r = broadcast_recipients.c
    users = {
        variant: int(n)
        for variant, n in conn.execute(
            select(r.variant, func.count())
            .where(r.workspace_id == workspace_id, r.broadcast_id == broadcast.id)
            .group_by(r.variant)
        )
    }
    messages = outcome_counts(conn, workspace_id, message_ids(workspace_id, broadcast.id))
    status = messages["by_status"]
    out: dict[str, Any] = {
        "broadcast": broadcast.key,
        "status": broadcast.status,
        "audience": sum(users.values()) if users else broadcast.audience_size,
        "holdout": users.get(HOLDOUT, 0),
        "queued": broadcast.queued,
        "messages": messages,
        "sent": status.get("delivered", 0),  # accepted by the provider
        "waiting": status.get("queued", 0) + status.get("sending", 0),
        "failed": status.get("failed", 0) + status.get("dead", 0),
        "suppressed": status.get("suppressed", 0),
        "deferred": status.get("deferred", 0),
        "suppressed_by_reason": messages["reasons"].get("suppressed", {}),
        "deferred_by_reason": messages["reasons"].get("deferred", {}),
        "failed_by_reason": messages["reasons"].get("dead", {}),
        "window": None,
        "variants": {},
        "experiment": None,
    }
    if broadcast.started_at is None or not users:
        return out
    start = broadcast.started_at
    until = definition.schedule.until
    end = in_utc(until, workspace_zone(conn, workspace_id)) if until is not None else start
    end += definition.conversion.window()
    out["window"] = {"from": start, "until": end}
    prefix = f"broadcast:{broadcast.id}:"
    clicked = _acted(conn, workspace_id, broadcast.id, CLICKED, start, min(end, now), prefix=prefix)
    replied = _acted(conn, workspace_id, broadcast.id, REPLIED, start, min(end, now))
    converted, revenue = _converted(
        conn, workspace_id, broadcast.id, definition.conversion.event, definition.conversion.value_property,
        start, min(end, now),
    )  # fmt: skip
    for variant, n in sorted(users.items()):
        out["variants"][variant] = {
            "users": n,
            "clicked": clicked.get(variant, 0),
            "replied": replied.get(variant, 0),
            "converted": converted.get(variant, 0),
            "revenue": revenue.get(variant, 0.0),
        }
    out["clicked"] = sum(clicked.values())
    out["replied"] = sum(replied.values())
    out["converted"] = sum(v for k, v in converted.items() if k != HOLDOUT)
    out["revenue"] = sum(v for k, v in revenue.items() if k != HOLDOUT)
    if len(users) > 1:
        groups = {v: (n, converted.get(v, 0), revenue.get(v, 0.0)) for v, n in users.items()}
        out["experiment"] = versus_control(groups, HOLDOUT)
    return out


def _events_of_recipients(
    conn: Connection, workspace_id: int, broadcast_id: int, event: str, start: datetime, end: datetime
) -> Any:
    from lifeloop.events.models import events

    r, e = broadcast_recipients.c, events.c
    return conn.execute(
        select(r.variant, r.profile_id, e.properties)
        .select_from(
            broadcast_recipients.join(
                events, (e.workspace_id == r.workspace_id) & (e.profile_id == r.profile_id)
            )
        )
        .where(
            r.workspace_id == workspace_id,
            r.broadcast_id == broadcast_id,
            e.event == event,
            e.timestamp >= start,
            e.timestamp < end,
        )
    )


def _acted(
    conn: Connection, workspace_id: int, broadcast_id: int, event: str, start: datetime, end: datetime,
    *, prefix: str | None = None,
) -> dict[str, int]:  # fmt: skip
    """Recipients per variant with at least one such event in the window (a click on another message's
    link does not count for this broadcast)."""
    seen: dict[str, set[int]] = {}
    for variant, pid, properties in _events_of_recipients(
        conn, workspace_id, broadcast_id, event, start, end
    ):
        message = (properties or {}).get("message")
        if prefix is not None and isinstance(message, str) and not message.startswith(prefix):
            continue
        seen.setdefault(variant, set()).add(pid)
    return {variant: len(pids) for variant, pids in seen.items()}


def _converted(
    conn: Connection, workspace_id: int, broadcast_id: int, event: str, value_property: str,
    start: datetime, end: datetime,
) -> tuple[dict[str, int], dict[str, float]]:  # fmt: skip
    """Converted recipients and their revenue (the value property summed over their conversions)."""
    seen: dict[str, set[int]] = {}
    revenue: dict[str, float] = {}
    for variant, pid, properties in _events_of_recipients(
        conn, workspace_id, broadcast_id, event, start, end
    ):
        seen.setdefault(variant, set()).add(pid)
        value = (properties or {}).get(value_property)
        if isinstance(value, int | float) and not isinstance(value, bool):
            revenue[variant] = revenue.get(variant, 0.0) + float(value)
    return {variant: len(pids) for variant, pids in seen.items()}, revenue
