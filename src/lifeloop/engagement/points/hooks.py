"""How points react to placed events (earn rules, check-in requests, new-user tasks) and what they do
over time (expire due lots). See ``engagement.reactions`` and ``engagement.sweeps``.

Every reaction's key comes from the event's ``message_id``, so an event placed again (or a retried
transaction) earns once. The programme's own events (``Points …``, ``Checked In``) are never earn
triggers, whatever the rules say.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from decimal import ROUND_FLOOR, Decimal, InvalidOperation
from functools import partial
from typing import Any

from sqlalchemy import Connection, Engine, select

from lifeloop.engagement.points import checkin, ledger, tasks
from lifeloop.engagement.points.models import points_lots
from lifeloop.engagement.points.settings import OWN_EVENTS, PointsSettings, configured, get_settings
from lifeloop.engagement.reactions import PlacedEvent
from lifeloop.store.engine import transaction

log = logging.getLogger(__name__)

LATE_CHECKIN = timedelta(hours=1)  # a check-in request this late still counts for its own day
SWEEP_BATCH = 500  # accounts per query of the expiry sweep; each account expires in its own transaction


def event_key(kind: str, message_id: str) -> str:
    """A ledger key for what an event earned: readable, and short enough for any message id."""
    if len(message_id) > 200:
        message_id = hashlib.sha256(message_id.encode()).hexdigest()
    return f"{kind}:{message_id}"


def order_points(rate: float, properties: dict[str, Any]) -> int:
    """floor(rate × the order's ``revenue``, else its ``total``); 0 for an order without an amount."""
    amount = properties.get("revenue", properties.get("total"))
    if isinstance(amount, bool) or not isinstance(amount, int | float | str):
        return 0
    try:
        value = Decimal(str(rate)) * Decimal(str(amount))
    except InvalidOperation:
        return 0
    if not value.is_finite() or value <= 0:
        return 0
    return min(int(value.to_integral_value(rounding=ROUND_FLOOR)), ledger.MAX_POINTS)


def _order_id(properties: dict[str, Any]) -> str | None:
    order = properties.get("order_id")
    if isinstance(order, bool) or not isinstance(order, str | int) or not str(order):
        return None
    return str(order)


def _reverse_order(
    conn: Connection,
    workspace_id: int,
    event: PlacedEvent,
    order: str,
    settings: PointsSettings,
    now: datetime,
) -> None:
    """Take back what a refunded order earned: all of it, or rate × the refund's amount when it names
    one, never more than the order earned less what earlier refunds took, nor more than the balance
    (points already spent stay spent: a balance never goes negative)."""
    ref, key = f"order:{order}"[:255], event_key("refund", event.message_id)
    ledger.lock_account(conn, workspace_id, event.profile_id, now)  # what is left to take cannot move now
    if ledger.entry_by_key(conn, workspace_id, key) is not None:  # this refund was taken back already
        return
    done = ledger.points_for(conn, workspace_id, event.profile_id, ref)
    left = done["earn"] - done["spend"]
    if left <= 0:
        return
    names_amount = "revenue" in event.properties or "total" in event.properties
    wanted = order_points(settings.rules["order"]["rate"], event.properties) if names_amount else left
    take = min(wanted, left, ledger.balance(conn, workspace_id, event.profile_id, now=now))
    if take > 0:
        ledger.spend_points(
            conn,
            workspace_id,
            event.profile_id,
            take,
            key=key,
            reason=f"order {order} refunded"[:200],
            now=now,
            ref=ref,
        )


def _react_one(
    conn: Connection,
    workspace_id: int,
    event: PlacedEvent,
    settings: PointsSettings,
    now: datetime,
    settled: set[tuple[int, str]],
) -> None:
    rules, pid, name = settings.rules, event.profile_id, event.name
    order = _order_id(event.properties)
    if name == rules["order"]["event"]:
        points = order_points(rules["order"]["rate"], event.properties)
        if points:
            ledger.award_points(
                conn,
                workspace_id,
                pid,
                points,
                key=event_key("order", event.message_id),
                reason=f"order {order}"[:200] if order else "order completed",
                now=now,
                ref=f"order:{order}"[:255] if order else None,
            )
    if name == rules["refund"]["event"] and order:
        _reverse_order(conn, workspace_id, event, order, settings, now)
    if name == rules["review"]["event"] and rules["review"]["points"]:
        ledger.award_points(
            conn,
            workspace_id,
            pid,
            int(rules["review"]["points"]),
            key=event_key("review", event.message_id),
            reason="product reviewed",
            now=now,
        )
    if (
        name == settings.checkin["event"]
        and settings.checkin["enabled"]
        and now - event.timestamp <= LATE_CHECKIN
    ):
        day = checkin.local_day(conn, workspace_id, min(event.timestamp, now))
        checkin.check_in(conn, workspace_id, pid, now=now, day=day)
    for task in tasks.tasks_done_by(name):
        if (pid, task) in settled:
            continue
        done = tasks.complete_task(
            conn,
            workspace_id,
            pid,
            task,
            message_id=event.message_id,
            at=min(event.timestamp, now),
            now=now,
            settings=settings,
        )
        if done or task != "complete_profile":  # an incomplete profile may be completed later on
            settled.add((pid, task))


def react(conn: Connection, workspace_id: int, events: Sequence[PlacedEvent], now: datetime) -> None:
    """Earn by the workspace's rules, check in on request, and pay new-user tasks, in the transaction
    that placed the events. Customers are taken in id order, the order every path locks accounts in."""
    relevant = [e for e in events if e.name not in OWN_EVENTS]
    if not relevant or not configured(conn, workspace_id):
        return  # a workspace earns points only once it has set up its points programme
    settings = get_settings(conn, workspace_id)
    triggers = {
        settings.rules["order"]["event"],
        settings.rules["refund"]["event"],
        settings.rules["review"]["event"],
        settings.checkin["event"],
    }
    triggers |= {name for task, name in tasks.TASK_EVENTS.items() if settings.tasks["rewards"].get(task)}
    # A customer's new-user task that is done, or whose window closed at an event, is settled for the
    # rest of the batch (their events come in time order): no look-up for each later page view.
    settled: set[tuple[int, str]] = set()
    for event in sorted(
        (e for e in relevant if e.name in triggers), key=lambda e: (e.profile_id, e.timestamp)
    ):
        _react_one(conn, workspace_id, event, settings, now, settled)


def _expire(workspace_id: int, profile_id: int, now: datetime, conn: Connection) -> int:
    return ledger.expire_due(conn, workspace_id, profile_id, now=now)


def sweep(engine: Engine, now: datetime) -> int:
    """Expire every lot due at ``now``, one customer per transaction; how many lots expired."""
    expired = 0
    while True:
        with engine.connect() as conn:
            due = conn.execute(
                select(points_lots.c.workspace_id, points_lots.c.profile_id)
                .where(points_lots.c.remaining > 0, points_lots.c.expires_at <= now)
                .group_by(points_lots.c.workspace_id, points_lots.c.profile_id)
                .order_by(points_lots.c.workspace_id, points_lots.c.profile_id)
                .limit(SWEEP_BATCH)
                .execution_options(cross_workspace=True)
            ).all()
        if not due:
            return expired
        this_batch = 0
        for workspace_id, profile_id in due:
            # background: nobody waits on it, so the writers people wait on go first
            this_batch += transaction(
                engine, partial(_expire, workspace_id, profile_id, now), background=True
            )
        expired += this_batch
        if len(due) < SWEEP_BATCH or this_batch == 0:
            return expired
