"""The background work of ``lifeloop worker``, as functions any process can run in its threads.

``lifeloop worker`` runs them in a process of its own; ``lifeloop demo`` runs the very same loops in
threads of the process that serves the API, so a newcomer's console shows journeys advancing, messages
delivered and analytics current without starting a second command. What runs:

- the tick loop (this thread): place ingested events on profiles, queue the messages of due
  broadcasts, and every ``sweep_seconds`` apply time-only stage, tag and segment changes;
- a delivery thread: send due messages from the outbox through each workspace's channels;
- a journey thread: advance due journey runs and look at time triggers;
- an analytics thread: every ``analytics_seconds`` sync the analytics store and write value tiers.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from sqlalchemy import Engine

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    """What to run and how often; the defaults are ``lifeloop worker``'s."""

    idle_seconds: float = 0.2  # pause between polls of the tick loop when there is no work
    sweep_seconds: float = 60.0  # how often time-only stage, tag and segment changes are applied
    deliveries: bool = True
    journeys: bool = True
    delivery_lease: float = 60.0
    webhook_secret: str | None = None  # signs webhooks of workspaces without a webhook channel
    analytics_seconds: float = 300.0  # 0: never
    analytics_path: Path | None = None  # default: LIFELOOP_ANALYTICS_PATH (analytics.store.default_path)
    # Off when another thread of the process already places events (the API's resolver in the demo).
    resolve: bool = True
    worker_id: str = field(default_factory=lambda: f"worker-{os.getpid()}")


@dataclass(frozen=True, slots=True)
class OnceReport:
    """What ``run_once`` did."""

    placed: int  # events placed on profiles
    swept: int  # profiles re-evaluated by time
    advanced: int  # journey runs advanced
    queued: int  # broadcast recipients queued


def start_threads(engine: Engine, stop: threading.Event, options: WorkerOptions) -> list[threading.Thread]:
    """Start the delivery, journey and analytics threads the options ask for; they end when ``stop``
    is set (after their current batch)."""
    threads: list[threading.Thread] = []
    if options.deliveries:
        from lifeloop.messaging.delivery_worker import Adapters, run_delivery_worker

        threads.append(
            threading.Thread(
                target=run_delivery_worker,
                kwargs={
                    "engine": engine,
                    "stop_event": stop,
                    "worker_id": options.worker_id,
                    "lease_seconds": options.delivery_lease,
                    "adapters": Adapters(engine, webhook_secret=options.webhook_secret),
                },
                name="lifeloop-delivery",
            )
        )
    if options.journeys:
        from lifeloop.journeys.worker import run_journey_worker

        threads.append(
            threading.Thread(
                target=run_journey_worker,
                args=(engine,),
                kwargs={"stop_event": stop},
                name="lifeloop-journeys",
            )
        )
    if options.analytics_seconds > 0:
        from lifeloop.analytics.refresh import run_refresh_loop
        from lifeloop.analytics.store import default_path

        threads.append(
            threading.Thread(
                target=run_refresh_loop,
                args=(engine, options.analytics_path or default_path()),
                kwargs={"stop": stop, "every": options.analytics_seconds},
                name="lifeloop-analytics",
            )
        )
    for thread in threads:
        thread.start()
    return threads


def tick_loop(
    engine: Engine, stop: threading.Event, options: WorkerOptions, *, keep_going: bool = False
) -> None:
    """Place events, queue due broadcasts and sweep time-only changes until ``stop``.

    A failing round ends the loop (``lifeloop worker`` exits with the error) unless ``keep_going``: then
    it is logged and retried after a pause, as the other loops do (the demo, which must keep serving).
    """
    from lifeloop.audience import service as audience
    from lifeloop.broadcasts.sender import tick as broadcast_tick
    from lifeloop.engagement.sweeps import sweep as engagement_sweep
    from lifeloop.lifecycle.service import sweep, workspaces_with_models
    from lifeloop.profiles.resolver import resolve_pending

    next_sweep = 0.0
    while not stop.is_set():
        try:
            placed = resolve_pending(engine) if options.resolve else 0
            queued = broadcast_tick(engine)
            if time.monotonic() >= next_sweep:
                for ws in workspaces_with_models(engine):
                    sweep(engine, ws)
                for ws in audience.workspaces_to_sweep(engine):
                    audience.sweep(engine, ws)
                engagement_sweep(engine)
                next_sweep = time.monotonic() + options.sweep_seconds
        except Exception:
            if not keep_going:
                raise
            log.exception("background work failed; will retry")
            stop.wait(1.0)
            continue
        if not placed and not queued:
            stop.wait(options.idle_seconds)


def run_worker(engine: Engine, stop: threading.Event, options: WorkerOptions) -> None:
    """``lifeloop worker``: the threads, and the tick loop in this thread, until ``stop``; then wait for
    the threads to finish their current batch."""
    threads = start_threads(engine, stop, options)
    try:
        tick_loop(engine, stop, options)
    finally:
        stop.set()
        for thread in threads:
            thread.join()


def run_once(engine: Engine, *, journeys: bool = True) -> OnceReport:
    """Do the waiting work once (``lifeloop worker --once``): place events, queue every due broadcast
    message, sweep time-only changes, and advance journeys until they are idle. Nothing is delivered."""
    from lifeloop.audience import service as audience
    from lifeloop.broadcasts.sender import send_all
    from lifeloop.engagement.sweeps import sweep as engagement_sweep
    from lifeloop.lifecycle.service import sweep, workspaces_with_models
    from lifeloop.profiles.resolver import resolve_pending

    placed = resolve_pending(engine)
    queued = send_all(engine)
    swept = sum(sweep(engine, ws) for ws in workspaces_with_models(engine))
    swept += sum(audience.sweep(engine, ws) for ws in audience.workspaces_to_sweep(engine))
    swept += engagement_sweep(engine)
    advanced = 0
    if journeys:
        from lifeloop.journeys.engine import run_until_idle
        from lifeloop.journeys.scheduler import tick

        tick(engine)
        advanced = run_until_idle(engine)
    return OnceReport(placed=placed, swept=swept, advanced=advanced, queued=queued)


class Background:
    """The worker's loops in threads of this process (the tick loop too), stopped together.

    ``with Background(engine, options):`` starts them and, on leaving, stops them after their current
    batch; a failing round is logged and retried, never taking the host process down.
    """

    def __init__(self, engine: Engine, options: WorkerOptions) -> None:
        self.engine = engine
        self.options = options
        self.stop_event = threading.Event()
        self.threads: list[threading.Thread] = []

    def start(self, *, analytics: bool = True) -> Background:
        """Start the loops; ``analytics=False`` leaves the analytics thread for ``start_analytics`` (the
        demo refreshes once itself first, and two refreshes must not write the store at once)."""
        options = self.options if analytics else replace(self.options, analytics_seconds=0.0)
        self.threads += start_threads(self.engine, self.stop_event, options)
        ticks = threading.Thread(
            target=tick_loop,
            args=(self.engine, self.stop_event, self.options),
            kwargs={"keep_going": True},
            name="lifeloop-ticks",
        )
        ticks.start()
        self.threads.append(ticks)
        return self

    def start_analytics(self) -> None:
        """Start the analytics thread alone (after ``start(analytics=False)``)."""
        only = replace(self.options, deliveries=False, journeys=False)
        self.threads += start_threads(self.engine, self.stop_event, only)

    def stop(self, timeout: float = 30.0) -> None:
        self.stop_event.set()
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(deadline - time.monotonic(), 0.1))
        alive = [t.name for t in self.threads if t.is_alive()]
        if alive:
            log.warning("background threads still running after %.0f s: %s", timeout, ", ".join(alive))

    def __enter__(self) -> Background:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
