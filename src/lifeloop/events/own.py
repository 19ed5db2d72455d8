"""Events lifeloop records on profiles itself: stage changes, tags, segments.

They need no identity resolution, so they are appended and placed on their profiles in the same
transaction as the change they announce, and counted in the computed properties at once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from sqlalchemy import Connection

from lifeloop.events import store as event_store
from lifeloop.events.messages import Message
from lifeloop.profiles import computed

_CHUNK = 5000

# Called with the events just recorded, in the same transaction. Modules above ``events`` (journeys)
# subscribe here, so the lifecycle and audience code that records the events need not know them.
OwnEventListener = Callable[[Connection, int, Sequence[tuple[int, Message]]], None]
_listeners: list[OwnEventListener] = []


def subscribe(listener: OwnEventListener) -> None:
    """Call ``listener`` with every batch of own events recorded from now on (once per listener)."""
    if listener not in _listeners:
        _listeners.append(listener)


def record_own_events(conn: Connection, workspace_id: int, items: Sequence[tuple[int, Message]]) -> None:
    """Append ``(profile id, message)`` pairs on their profiles and update their aggregates."""
    for start in range(0, len(items), _CHUNK):
        placed = event_store.append_placed_events(conn, workspace_id, items[start : start + _CHUNK])
        resolved = [
            computed.ResolvedEvent(pid, "track", m.event, m.timestamp, m.properties) for pid, m in placed
        ]
        computed.apply_resolved_events(conn, workspace_id, resolved)
        for listener in _listeners:
            listener(conn, workspace_id, placed)
