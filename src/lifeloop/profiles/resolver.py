"""Places ingested events on profiles (identity resolution), after ingest has committed them.

Ingest only appends validated events (``profile_id`` NULL) so that a 200 costs one insert. The
resolver then takes each workspace's waiting events in arrival order, resolves who they belong to,
writes profiles, identities and merges, and sets ``profile_id``, all in one transaction per batch.

One resolver runs per workspace at a time (``store.locks``: an advisory lock on PostgreSQL, the single
writer on SQLite), so batches never race each other over the same people; several processes may run it.
A crash loses nothing: an event that was not placed is still waiting and is taken by the next run.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import Connection, Engine

from lifeloop.audience import service as audience
from lifeloop.engagement import reactions as engagement
from lifeloop.events import store as event_store
from lifeloop.events.messages import message_from_row
from lifeloop.journeys import engine as journeys
from lifeloop.lifecycle import service as lifecycle
from lifeloop.profiles import computed
from lifeloop.profiles.identity import resolve_and_place
from lifeloop.store.engine import connect, transaction
from lifeloop.store.locks import RESOLUTION, lock_workspace
from lifeloop.store.schema import utcnow

log = logging.getLogger(__name__)

DEFAULT_BATCH = 1000
# Ingest counts as busy while a request arrived within this many seconds.
_BUSY_WINDOW = 0.25


def resolve_batch(
    conn: Connection, workspace_id: int, *, batch_size: int = DEFAULT_BATCH, now: datetime | None = None
) -> int:
    """Resolve up to ``batch_size`` waiting events of one workspace; returns how many were placed.

    ``now`` (default: the wall clock) is the moment stages, audiences and journeys react at; tests pass
    their own clock."""
    lock_workspace(conn, RESOLUTION, workspace_id)
    rows = event_store.unresolved_events(conn, workspace_id, limit=batch_size)
    if not rows:
        return 0
    now = now or utcnow()
    messages = [message_from_row(row) for row in rows]
    placed = dict(resolve_and_place(conn, workspace_id, messages, [row.id for row in rows], now))
    # What reacts to events runs here, in the same transaction: all or nothing with the placement.
    computed.apply_resolved_events(
        conn,
        workspace_id,
        [computed.ResolvedEvent(placed[r.id], r.type, r.event, r.timestamp, r.properties) for r in rows],
    )
    lifecycle.assign_stages(conn, workspace_id, sorted(set(placed.values())), now=now, reason="event")
    audience.refresh(conn, workspace_id, rows, placed, now=now)
    events = [
        engagement.PlacedEvent(
            placed[r.id],
            computed.event_name(r.type, r.event),
            dict(r.properties or {}),
            r.timestamp,
            r.message_id,
        )
        for r in rows
    ]
    engagement.react(conn, workspace_id, events, now=now)
    occurrences = [
        journeys.Occurrence(e.profile_id, e.name, e.properties, e.timestamp, e.message_id) for e in events
    ]
    journeys.react(conn, workspace_id, occurrences, now=now)
    return len(rows)


def resolve_pending(
    engine: Engine,
    workspace_id: int | None = None,
    *,
    batch_size: int = DEFAULT_BATCH,
    on_progress: Callable[[int], None] | None = None,
    now: datetime | None = None,
) -> int:
    """Resolve every event still waiting for a profile; returns how many were placed (reacting at
    ``now``, as ``resolve_batch``)."""
    if workspace_id is None:
        with connect(engine) as conn:
            workspace_ids = event_store.workspaces_with_unresolved_events(conn)
    else:
        workspace_ids = [workspace_id]
    total = 0
    for ws in workspace_ids:

        def one_batch(conn: Connection, ws: int = ws) -> int:
            return resolve_batch(conn, ws, batch_size=batch_size, now=now)

        while True:
            placed = transaction(engine, one_batch, background=True)
            total += placed
            if on_progress is not None and placed:
                on_progress(placed)
            if placed < batch_size:
                break
    return total


def count_pending(engine: Engine, workspace_id: int) -> int:
    with connect(engine) as conn:
        return event_store.count_unresolved(conn, workspace_id)


class BackgroundResolver:
    """A thread that resolves new events soon after they are committed (woken by ``notify``).

    It shares the API process (one GIL, and on SQLite one writer) with ingest requests, and resolving
    costs several times more per event than ingesting, so it is paced (decision 11 in docs/decisions.md):

    - while requests keep arriving and the oldest waiting event is younger than ``max_lag_seconds``, it
      takes at most ``busy_share`` of the time (small batches, a pause after each) and never stops;
    - once the oldest waiting event is older than ``max_lag_seconds`` it runs flat out and new ingest
      requests wait (``admit``) until it is back under the bound, so the lag stays bounded;
    - when ingest is quiet it works through the backlog in larger batches, which cost less per event.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        idle_seconds: float = 1.0,
        batch_size: int = 250,
        quiet_batch_size: int = DEFAULT_BATCH,
        busy_share: float = 0.25,
        max_lag_seconds: float = 30.0,
        max_admit_wait: float = 2.0,
    ):
        self._engine = engine
        self._idle_seconds = idle_seconds
        # Inside the API process short batches keep the write lock free for ingest requests.
        self._batch_size = batch_size
        self._quiet_batch_size = quiet_batch_size
        self._busy_share = busy_share
        self._max_lag = max_lag_seconds
        self._max_admit_wait = max_admit_wait
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_ingest = 0.0  # monotonic time of the last notify
        self._behind = False  # the oldest waiting event is older than max_lag_seconds

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="lifeloop-resolver", daemon=True)
        self._thread.start()

    def notify(self) -> None:
        self._last_ingest = time.monotonic()
        self._wake.set()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def behind(self) -> bool:
        return self._behind

    async def admit(self) -> None:
        """Hold an ingest request while resolution is more than ``max_lag_seconds`` behind.

        The wait is capped (``max_admit_wait``): a resolver that keeps failing must not stop ingest,
        whose job is to make events durable.
        """
        deadline = time.monotonic() + self._max_admit_wait
        while self._behind and not self._stop.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    def _ingest_busy(self) -> bool:
        return time.monotonic() - self._last_ingest < _BUSY_WINDOW

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._idle_seconds)
            self._wake.clear()
            try:
                while not self._stop.is_set() and self._round():
                    pass
            except Exception:  # keep resolving later batches; the failed one stays waiting
                log.exception("resolving events failed; will retry")
                self._behind = False  # admit() must not hold requests for a resolver that is failing
                self._stop.wait(self._idle_seconds)
        self._behind = False

    def _round(self) -> bool:
        """One batch for each workspace with waiting events; False when nothing was waiting."""
        with connect(self._engine) as conn:
            workspace_ids = event_store.workspaces_with_unresolved_events(conn)
            oldest = [event_store.oldest_unresolved_received_at(conn, ws) for ws in workspace_ids]
        arrived = [t for t in oldest if t is not None]
        self._behind = bool(arrived) and (utcnow() - min(arrived)).total_seconds() > self._max_lag
        if not workspace_ids:
            return False
        for ws in workspace_ids:
            busy = self._ingest_busy()
            size = self._batch_size if busy else self._quiet_batch_size
            spent, placed = self._one_batch(ws, size)
            # Only a full batch means a backlog to pace; a partial one means it keeps up, and pausing
            # then would only delay what reacts to each event (a journey's welcome) by the pause.
            if busy and placed >= size and not self._behind and self._busy_share < 1:
                self._stop.wait(spent * (1 - self._busy_share) / self._busy_share)
        return True

    def _one_batch(self, workspace_id: int, size: int) -> tuple[float, int]:
        """Resolve one batch; returns the seconds of work (not of waiting for the write turn) and how many
        events it placed."""
        started: list[float] = []

        def work(conn: Connection) -> int:
            started.append(time.monotonic())
            return resolve_batch(conn, workspace_id, batch_size=size)

        # Behind the bound it no longer lets ingest requests go first on SQLite.
        placed = transaction(self._engine, work, background=not self._behind)
        return time.monotonic() - started[-1], placed
