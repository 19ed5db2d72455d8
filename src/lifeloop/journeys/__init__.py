"""Journeys: durable automations that act on events, stages, segments, tags, dates and schedules.

Importing the package subscribes the engine to lifeloop's own events (stage, tag, segment and journey
events), so they trigger journeys in the transaction that records them.
"""

from __future__ import annotations

from lifeloop.events.own import subscribe
from lifeloop.journeys.engine import on_own_events

subscribe(on_own_events)
