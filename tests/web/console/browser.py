"""Browser-test support: a brand with months of simulated history, and Playwright on the system Chromium."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

from lifeloop.analytics.refresh import refresh
from lifeloop.demo.simulator import Simulation
from lifeloop.events.messages import parse_message
from lifeloop.events.service import ingest
from lifeloop.lifecycle.service import install_preset
from lifeloop.profiles.resolver import resolve_pending
from lifeloop.workspaces.models import SourceKey
from tests.conftest import Brand

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("LIFELOOP_TEST_ARTIFACTS", "var/test-artifacts"))


def load_history(
    engine: sa.Engine, brand: Brand, analytics_path: Path, customers: int = 80, days: int = 60
) -> None:
    """The demo brand's simulator, sent through ingest, placed on profiles and synced to analytics."""
    with engine.begin() as conn:
        install_preset(conn, brand.workspace_id, "line")
    now = datetime.now(UTC)
    simulation = Simulation(customers, days, seed=11, end=now.replace(minute=0, second=0, microsecond=0))
    messages = [parse_message(raw, received_at=now) for raw in simulation]
    key = SourceKey(brand.workspace_id, brand.source_id)
    for i in range(0, len(messages), 500):
        ingest(engine, key, messages[i : i + 500])
    resolve_pending(engine)
    refresh(engine, analytics_path, settle_seconds=0)


def launch_options() -> dict[str, object]:
    return {
        "executable_path": CHROMIUM,
        "headless": True,
        "args": ["--no-sandbox", "--disable-background-networking", "--disable-gpu"],
    }
