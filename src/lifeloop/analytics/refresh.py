"""Keeps the analytics store and the value tiers current: what ``lifeloop worker`` runs periodically."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine

from lifeloop.analytics.rfm import write_value_tiers
from lifeloop.analytics.sync import sync
from lifeloop.errors import LifeloopError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Refreshed:
    events: int  # copied into the analytics store
    tiers_changed: int  # profiles whose value_tier trait changed


def refresh(engine: Engine, path: str | Path, *, settle_seconds: float | None = None) -> Refreshed:
    """Sync new events into the store, then re-score RFM and write the tiers of every synced workspace."""
    report = sync(engine, path, settle_seconds=settle_seconds)
    changed = 0
    for workspace_id in report.workspaces:
        try:
            changed += write_value_tiers(engine, path, workspace_id)
        except LifeloopError as error:  # e.g. no orders yet: nothing to score
            log.info("value tiers of workspace %s not written: %s", workspace_id, error.message)
    return Refreshed(events=report.events, tiers_changed=changed)


def run_refresh_loop(engine: Engine, path: str | Path, *, stop: threading.Event, every: float) -> None:
    """Refresh every ``every`` seconds until ``stop``; a failed round is logged and retried next time."""
    while not stop.is_set():
        try:
            done = refresh(engine, path)
            log.info("analytics refreshed: %s events, %s tiers changed", done.events, done.tiers_changed)
        except Exception:  # the store may be busy (another process writing it): try again next round
            log.exception("analytics refresh failed")
        stop.wait(every)
