"""Events lifeloop records on profiles itself: stage changes, tags, segments.

They need no identity resolution, so they are appended and placed on their profiles in the same
transaction as the change they announce, and counted in the computed properties at once.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, select

from lifeloop.events import store as event_store
from lifeloop.events.messages import Message
from lifeloop.events.models import events
from lifeloop.profiles import computed

_CHUNK = 5000


def record_own_events(conn: Connection, workspace_id: int, items: Sequence[tuple[int, Message]]) -> None:
    """Append ``(profile id, message)`` pairs, place each on its profile and update its aggregates."""
    for start in range(0, len(items), _CHUNK):
        chunk = items[start : start + _CHUNK]
        ids = event_store.append_events(conn, workspace_id, None, [m for _, m in chunk])
        if not ids:
            continue
        # Which stored id is which message: read back by id range (a primary-key scan, no long IN list).
        stored, owner = set(ids), {m.message_id: (pid, m) for pid, m in chunk}
        rows = conn.execute(
            select(events.c.id, events.c.message_id).where(
                events.c.workspace_id == workspace_id, events.c.id >= min(ids), events.c.id <= max(ids)
            )
        )
        placed = [(r.id, owner[r.message_id]) for r in rows if r.id in stored and r.message_id in owner]
        event_store.place_events(conn, workspace_id, [(eid, pid) for eid, (pid, _) in placed])
        resolved = [
            computed.ResolvedEvent(pid, "track", m.event, m.timestamp, m.properties) for _, (pid, m) in placed
        ]
        computed.apply_resolved_events(conn, workspace_id, resolved)
