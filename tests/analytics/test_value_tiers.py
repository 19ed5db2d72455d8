"""RFM value layers flow back to profiles as the value_tier trait the contact policy and segments read."""

from __future__ import annotations

import random
from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa

from lifeloop.analytics.refresh import refresh
from lifeloop.analytics.rfm import LAYERS, value_tiers
from lifeloop.events.messages import parse_message
from lifeloop.events.service import ingest
from lifeloop.messaging.policy import tier_of
from lifeloop.profiles.models import profiles
from lifeloop.profiles.resolver import resolve_pending
from lifeloop.store.schema import utcnow
from lifeloop.workspaces.models import SourceKey
from tests.conftest import Brand


def shop_history(engine: sa.Engine, brand: Brand, customers: int = 60) -> None:
    rng = random.Random(11)
    now = utcnow()
    raws = []
    for c in range(customers):
        raws.append({"type": "page", "userId": f"c{c}", "timestamp": (now - timedelta(days=200)).isoformat()})
        for o in range(rng.choice([0, 1, 1, 2, 4, 8])):
            when = now - timedelta(days=rng.uniform(0, 180), hours=o)
            raws.append(
                {
                    "type": "track",
                    "event": "Order Completed",
                    "userId": f"c{c}",
                    "properties": {"revenue": rng.choice([90, 380, 1200, 4800])},
                    "timestamp": when.isoformat(),
                }
            )
    key = SourceKey(workspace_id=brand.workspace_id, source_id=brand.source_id)
    ingest(engine, key, [parse_message(r, received_at=now) for r in raws])
    resolve_pending(engine)


def traits_by_profile(engine: sa.Engine, brand: Brand) -> dict[int, dict]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(profiles.c.id, profiles.c.traits).where(profiles.c.workspace_id == brand.workspace_id)
        )
        return {r.id: r.traits for r in rows}


def test_refresh_writes_each_customers_layer_and_is_idempotent(
    engine: sa.Engine, brand: Brand, tmp_path: Path
) -> None:
    shop_history(engine, brand)
    store = tmp_path / "analytics.duckdb"
    first = refresh(engine, store, settle_seconds=0)  # just ingested: no need to wait on PostgreSQL
    assert first.events > 0 and first.tiers_changed == 60

    layers = value_tiers(store, brand.workspace_id)
    traits = traits_by_profile(engine, brand)
    assert {pid: t["value_tier"] for pid, t in traits.items()} == layers
    assert set(layers.values()) <= set(LAYERS) and len(set(layers.values())) >= 3
    # The contact policy reads the same tier (caps per tier); a profile without one is regular.
    assert {tier_of(t) for t in traits.values()} == set(layers.values())
    assert tier_of({}) == "regular"

    again = refresh(engine, store, settle_seconds=0)
    assert again.events == 0 and again.tiers_changed == 0
