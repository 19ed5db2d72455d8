"""How this part of the programme reacts to placed events and what it does over time (see
``engagement.reactions`` and ``engagement.sweeps``)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Connection, Engine

from lifeloop.engagement.reactions import PlacedEvent


def react(conn: Connection, workspace_id: int, events: Sequence[PlacedEvent], now: datetime) -> None:
    """React to events just placed on their profiles, in their transaction."""


def sweep(engine: Engine, now: datetime) -> int:
    """Do what is due at ``now``; how many things changed."""
    return 0
