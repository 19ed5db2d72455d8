"""Events lifeloop records on profiles itself: stage changes, tags, segments.

They need no identity resolution, so they are appended and placed on their profiles in the same
transaction as the change they announce, and counted in the computed properties at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from sqlalchemy import Connection

from lifeloop.events import store as event_store
from lifeloop.events.messages import Message
from lifeloop.profiles import computed

_CHUNK = 5000
_GATHERED = "lifeloop.own_events.gathered"  # Connection.info key: (workspace id, events held back)

# Called with the events just recorded, in the same transaction. Modules above ``events`` (journeys)
# subscribe here, so the lifecycle and audience code that records the events need not know them.
OwnEventListener = Callable[[Connection, int, Sequence[tuple[int, Message]]], None]
_listeners: list[OwnEventListener] = []


def subscribe(listener: OwnEventListener) -> None:
    """Call ``listener`` with every batch of own events recorded from now on (once per listener)."""
    if listener not in _listeners:
        _listeners.append(listener)


@contextmanager
def gathered(conn: Connection, workspace_id: int) -> Iterator[None]:
    """Hold back the own events recorded on ``conn`` for ``workspace_id`` inside the block and record
    them as one batch when it ends, still in the caller's transaction. Programme operations record an
    event each (every award of points); gathered, a thousand of them reach the aggregates and the
    listeners once instead of a thousand times. A nested block joins the outer one. A block that raises
    records nothing (its transaction is not going to commit). A savepoint inside the block that may roll
    back is taken with ``savepoint`` so that its events go with it."""
    outer = conn.info.get(_GATHERED)
    if outer is not None and outer[0] == workspace_id:
        yield
        return
    held: list[tuple[int, Message]] = []
    conn.info[_GATHERED] = (workspace_id, held)
    try:
        yield
    finally:
        if outer is None:
            conn.info.pop(_GATHERED, None)
        else:
            conn.info[_GATHERED] = outer
    record_own_events(conn, workspace_id, held)


@contextmanager
def savepoint(conn: Connection) -> Iterator[None]:
    """``conn.begin_nested()`` that, when it rolls back, also forgets the own events held back since it
    began (see ``gathered``)."""
    held = conn.info.get(_GATHERED)
    mark = len(held[1]) if held is not None else 0
    try:
        with conn.begin_nested():
            yield
    except BaseException:
        if held is not None:
            del held[1][mark:]
        raise


def record_own_events(conn: Connection, workspace_id: int, items: Sequence[tuple[int, Message]]) -> None:
    """Append ``(profile id, message)`` pairs on their profiles and update their aggregates (at the end
    of the ``gathered`` block the connection is in, if any)."""
    held = conn.info.get(_GATHERED)
    if held is not None and held[0] == workspace_id:
        held[1].extend(items)
        return
    for start in range(0, len(items), _CHUNK):
        placed = event_store.append_placed_events(conn, workspace_id, items[start : start + _CHUNK])
        resolved = [
            computed.ResolvedEvent(pid, "track", m.event, m.timestamp, m.properties) for pid, m in placed
        ]
        computed.apply_resolved_events(conn, workspace_id, resolved)
        for listener in _listeners:
            listener(conn, workspace_id, placed)
