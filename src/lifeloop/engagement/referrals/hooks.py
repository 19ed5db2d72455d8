"""How this part of the programme reacts to placed events and what it does over time (see
``engagement.reactions`` and ``engagement.sweeps``).

The referral code arrives on any ingested identify or track call, as the trait or property
``referral_code`` (or ``ref``), or in ``context.campaign`` (``referral_code`` or ``ref``: the ``?ref=``
of the landing link); the device is ``context.device.id``. An ``Order Completed`` of a joined referee
is their first purchase (an existing customer is refused at joining).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, select

from lifeloop.engagement.reactions import PlacedEvent
from lifeloop.engagement.referrals import service
from lifeloop.events.models import events as events_table

_CODE_FIELDS = ("referral_code", "ref")
_CHUNK = 500


def code_in(
    traits: dict[str, Any] | None, properties: dict[str, Any] | None, context: dict[str, Any] | None
) -> Any:
    """The referral code an event carries, if any."""
    campaign = (context or {}).get("campaign")
    for source in (traits, properties, campaign if isinstance(campaign, dict) else None):
        for name in _CODE_FIELDS:
            value = (source or {}).get(name)
            if value:
                return value
    return None


def device_in(context: dict[str, Any] | None) -> str | None:
    device = (context or {}).get("device")
    value = device.get("id") if isinstance(device, dict) else None
    return (
        str(value)[:255]
        if isinstance(value, str | int) and not isinstance(value, bool) and value != ""
        else None
    )


def _stored(conn: Connection, workspace_id: int, message_ids: list[str]) -> dict[str, Any]:
    """Traits and context of the events (the placed event carries only its properties)."""
    found: dict[str, Any] = {}
    for start in range(0, len(message_ids), _CHUNK):
        rows = conn.execute(
            select(events_table.c.message_id, events_table.c.traits, events_table.c.context).where(
                events_table.c.workspace_id == workspace_id,
                events_table.c.message_id.in_(message_ids[start : start + _CHUNK]),
            )
        )
        found.update({r.message_id: r for r in rows})
    return found


def react(conn: Connection, workspace_id: int, events: Sequence[PlacedEvent], now: datetime) -> None:
    """Attribute referees whose events carry a code; complete referrals on first purchases."""
    ingested = [e for e in events if not e.message_id.startswith("engagement:")]
    if not ingested or service.get_program(conn, workspace_id) is None:
        return
    stored = _stored(conn, workspace_id, [e.message_id for e in ingested])
    for event in ingested:
        row = stored.get(event.message_id)
        traits = row.traits if row is not None else None
        context = row.context if row is not None else None
        device = device_in(context)
        code = code_in(traits, event.properties, context)
        if code:
            service.attribute(
                conn,
                workspace_id,
                event.profile_id,
                str(code),
                message_id=event.message_id,
                device_id=device,
                now=now,
            )
        if event.name == service.ORDER_COMPLETED:
            service.complete_first_purchase(
                conn,
                workspace_id,
                event.profile_id,
                message_id=event.message_id,
                properties=event.properties,
                device_id=device,
                now=now,
            )


def sweep(engine: Engine, now: datetime) -> int:
    """Referrals are settled by events; nothing is due over time."""
    return 0
