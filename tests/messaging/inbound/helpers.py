"""Reading what inbound webhooks stored."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from lifeloop.events.models import events


def stored_events(engine: sa.Engine, workspace_id: int) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(events).where(events.c.workspace_id == workspace_id).order_by(events.c.id)
        )
        return [dict(r._mapping) for r in rows]
