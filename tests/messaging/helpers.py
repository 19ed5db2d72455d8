"""Helpers shared by the outbox and policy tests: profiles through real ingest, a delivery loop."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from lifeloop.events.messages import parse_message
from lifeloop.events.service import ingest
from lifeloop.messaging.delivery_worker import Adapters, deliver_due
from lifeloop.messaging.outbox import RateLimiter
from lifeloop.profiles.resolver import resolve_pending
from lifeloop.profiles.service import find_by_identity
from lifeloop.store.engine import connect
from lifeloop.workspaces.models import SourceKey

SECRET = "whsec_test"


def make_profile(
    engine: sa.Engine,
    brand: Any,
    user_id: str,
    *,
    traits: dict[str, Any] | None = None,
    timezone: str | None = None,
    events: list[tuple[str, datetime]] = (),  # type: ignore[assignment]
) -> int:
    """A profile created the way a brand creates one: an identify (and events) through ingest."""
    now = datetime.now(UTC)
    context = {"timezone": timezone} if timezone else {}
    raws: list[dict[str, Any]] = [
        {
            "type": "identify",
            "userId": user_id,
            "traits": traits or {},
            "context": context,
            "timestamp": now.isoformat(),
        }
    ]
    raws += [
        {"type": "track", "userId": user_id, "event": name, "timestamp": at.isoformat()}
        for name, at in events
    ]
    ingest(
        engine,
        SourceKey(brand.workspace_id, brand.source_id),
        [parse_message(r, received_at=now) for r in raws],
    )
    resolve_pending(engine)
    with connect(engine) as conn:
        return find_by_identity(conn, brand.workspace_id, "user_id", user_id)


def drain(
    engine: sa.Engine, adapters: Adapters, *, clock: Any = None, worker_id: str = "t1", rounds: int = 50
) -> int:
    """Run delivery passes until nothing is due; returns how many claims were made."""
    limiter = RateLimiter()
    total = 0
    for _ in range(rounds):
        kwargs = {"clock": clock} if clock else {}
        claimed = deliver_due(engine, worker_id=worker_id, adapters=adapters, limiter=limiter, **kwargs)
        if not claimed:
            return total
        total += claimed
    return total
