"""The journey worker loop: advance due runs in batches, look at time triggers every ``tick_seconds``.

Any number of these run at once (threads of ``lifeloop worker`` processes, on any machine): claims
skip rows another worker holds (PostgreSQL), and a look at a time trigger locks its journey.
"""

from __future__ import annotations

import logging
import threading
import time

from sqlalchemy import Engine

from lifeloop.journeys.engine import run_due
from lifeloop.journeys.scheduler import tick

log = logging.getLogger(__name__)


def run_journey_worker(
    engine: Engine,
    *,
    stop_event: threading.Event,
    batch_size: int = 500,
    idle_seconds: float = 0.2,
    tick_seconds: float = 30.0,
) -> None:
    next_tick = 0.0
    while not stop_event.is_set():
        try:
            if time.monotonic() >= next_tick:
                tick(engine)
                next_tick = time.monotonic() + tick_seconds
            moved = run_due(engine, limit=batch_size)
        except Exception:  # a failing batch is rolled back whole; try again after a pause
            log.exception("advancing journeys failed; will retry")
            moved = 0
            stop_event.wait(1.0)
        if moved < batch_size:
            stop_event.wait(idle_seconds)
