"""How advisors react to placed events and what they do over time (see ``engagement.reactions`` and
``engagement.sweeps``): a WeCom add-contact assigns the customer to that advisor (with a ``wecom_contact``
rule), task rules make follow-up tasks, and the sweep sends the advisors' WeCom notifications."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Connection, Engine

from lifeloop.engagement.reactions import PlacedEvent


def _own(event: PlacedEvent) -> bool:
    return event.name.startswith("Advisor ")


def react(conn: Connection, workspace_id: int, events: Sequence[PlacedEvent], now: datetime) -> None:
    """React to events just placed on their profiles, in their transaction."""
    from .assignment import on_wecom_contact
    from .tasks import apply_task_rules

    relevant = [e for e in events if not _own(e)]
    if not relevant:
        return
    for event in relevant:
        props = event.properties
        userid = props.get("userid")
        if event.name == "Channel Followed" and props.get("channel") == "wecom" and isinstance(userid, str):
            on_wecom_contact(conn, workspace_id, event.profile_id, userid, now=now)
    apply_task_rules(conn, workspace_id, relevant, now)


def sweep(engine: Engine, now: datetime) -> int:
    """Send the advisors' due WeCom notifications; how many were sent."""
    from .notify import deliver_due

    return deliver_due(engine, now)
