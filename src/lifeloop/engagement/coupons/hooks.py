"""How coupons react to placed events and what they do over time (see ``engagement.reactions`` and
``engagement.sweeps``): an ``Order Completed`` carrying a coupon code redeems it; the sweep expires
issued coupons past their end."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine

from lifeloop.engagement.coupons.service import redeem_coupon
from lifeloop.engagement.reactions import PlacedEvent
from lifeloop.errors import LifeloopError
from lifeloop.events.own import savepoint

log = logging.getLogger(__name__)

ORDER_COMPLETED = "Order Completed"
SWEEP_BATCH = 500


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        return float(value)
    except ValueError:
        return None


def order_total(properties: dict[str, Any]) -> float | None:
    """The order's amount before its discount, as a coupon's threshold is measured against: Segment's
    ``total`` (else ``revenue``) has the discount taken off, so ``discount`` is added back."""
    total = _number(properties.get("total"))
    if total is None:
        total = _number(properties.get("revenue"))
    if total is None:
        return None
    discount = _number(properties.get("discount"))
    return total + discount if discount is not None and discount > 0 else total


def order_key(message_id: str) -> str:
    """The redemption key of an order event: its message id (hashed when too long to store)."""
    key = f"order:{message_id}"
    return key if len(key) <= 255 else "order:sha256:" + hashlib.sha256(message_id.encode()).hexdigest()


def react(conn: Connection, workspace_id: int, events: Sequence[PlacedEvent], now: datetime) -> None:
    """Redeem the coupon code of each ``Order Completed`` just placed, once per event (the key comes
    from its message id). A code that cannot be redeemed is logged and the order stays placed."""
    for event in events:
        if event.name != ORDER_COMPLETED:
            continue
        code = event.properties.get("coupon")
        if not isinstance(code, str) or not code.strip():
            continue
        order_id = event.properties.get("order_id")
        try:
            # A savepoint: a refusal leaves the placing transaction exactly as it was.
            with savepoint(conn):
                redeem_coupon(
                    conn,
                    workspace_id,
                    code,
                    profile_id=event.profile_id,
                    key=order_key(event.message_id),
                    now=now,
                    order_id=None if order_id is None else str(order_id)[:255],
                    order_total=order_total(event.properties),
                )
        except LifeloopError as error:
            log.info(
                "order %s of profile %s: coupon %r not redeemed: %s",
                order_id,
                event.profile_id,
                code,
                error.message,
            )


def sweep(engine: Engine, now: datetime) -> int:
    """Expire issued coupons past their end, in batches of ``SWEEP_BATCH``; how many expired."""
    from lifeloop.engagement.coupons.service import expire_due
    from lifeloop.store.engine import transaction

    expired = 0
    while True:
        seen, changed = transaction(
            engine, lambda conn: expire_due(conn, now, limit=SWEEP_BATCH), background=True
        )
        expired += changed
        if seen < SWEEP_BATCH:
            return expired
