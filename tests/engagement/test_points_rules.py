"""Earn rules from ingested events, through the real ingest API and the resolver: points per amount
spent (rounded down), per review, once per event; the programme's own events never earn."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from fastapi.testclient import TestClient

from lifeloop.engagement.points import hooks
from lifeloop.engagement.points.ledger import balance, history
from lifeloop.engagement.points.settings import save_section
from lifeloop.engagement.reactions import PlacedEvent
from lifeloop.events.models import events
from tests.conftest import Brand

from .points_helpers import NOW, assert_ledger_balances, customers, ingest, pid, track


def _points(client: TestClient, brand: Brand, user: str) -> int:
    with client.app.state.engine.connect() as conn:  # type: ignore[attr-defined]
        return balance(conn, brand.workspace_id, pid(client, brand, user), now=NOW)


def test_orders_and_reviews_earn_by_the_workspaces_rules(
    client: TestClient, engine: sa.Engine, brand: Brand
) -> None:
    ws = brand.workspace_id
    with engine.begin() as conn:  # 1 point per NT$10; a review is worth 15
        save_section(conn, ws, "rules", {"order": {"rate": 0.1}, "review": {"points": 15}}, now=NOW)
    ingest(
        client,
        brand,
        [
            track("ann", "Order Completed", "o-1", order_id="A-1", revenue=1234.5),  # 123.45 → 123
            track("ann", "Order Completed", "o-2", order_id="A-2", total="99"),  # no revenue: the total → 9
            track("ann", "Order Completed", "o-3", order_id="A-3"),  # no amount: nothing
            track("ann", "Order Completed", "o-4", revenue=-50),  # a negative amount: nothing
            track("ann", "Product Reviewed", "r-1", sku="tea"),
            track("bob", "Product Viewed", "v-1"),  # not a rule's event (and no new-user task reward here)
        ],
    )
    assert _points(client, brand, "ann") == 123 + 9 + 15
    assert _points(client, brand, "bob") == 5  # bob's browse is a new-user task (default reward 5)
    with engine.connect() as conn:
        reasons = [e.reason for e in history(conn, ws, pid(client, brand, "ann"))]
    assert sorted(reasons) == ["order A-1", "order A-2", "product reviewed"]
    # the same events delivered again are dropped by ingest; placed again, they would not earn twice
    ingest(client, brand, [track("ann", "Order Completed", "o-1", revenue=1234.5)])
    ann = pid(client, brand, "ann")
    again = [PlacedEvent(ann, "Order Completed", {"revenue": 1234.5}, NOW, "o-1")]
    with engine.begin() as conn:
        hooks.react(conn, ws, again, NOW)
    assert _points(client, brand, "ann") == 147
    assert assert_ledger_balances(engine, ws, ann)["earned"] == 147


def test_a_rule_on_another_event_name_and_a_zero_rate(
    client: TestClient, engine: sa.Engine, brand: Brand
) -> None:
    ws = brand.workspace_id
    with engine.begin() as conn:
        save_section(
            conn, ws, "rules", {"order": {"event": "Order Paid", "rate": 2}, "review": {"points": 0}}, now=NOW
        )
    ingest(
        client,
        brand,
        [
            track("ann", "Order Completed", "o-1", revenue=100),  # no longer the order rule's event
            track("ann", "Order Paid", "o-2", revenue=10.99),  # 21.98 → 21
            track("ann", "Product Reviewed", "r-1"),  # reviews earn nothing at 0
        ],
    )
    assert _points(client, brand, "ann") == 21


def test_the_programmes_own_events_never_earn(client: TestClient, engine: sa.Engine, brand: Brand) -> None:
    ws = brand.workspace_id
    (ann,) = customers(client, brand, "ann")
    ingest(client, brand, [track("ann", "Order Completed", "o-1", revenue=40, at=NOW + timedelta(minutes=1))])
    with engine.connect() as conn:
        names = [
            r.event
            for r in conn.execute(
                sa.select(events.c.event).where(
                    events.c.workspace_id == ws, events.c.profile_id == ann, events.c.type == "track"
                )
            )
        ]
    assert names.count("Points Earned") == 1  # recorded once, and it did not earn again
    own = [PlacedEvent(ann, "Points Earned", {"points": 40, "revenue": 40}, NOW, "engagement:points:1")]
    with engine.begin() as conn:
        hooks.react(conn, ws, own, NOW)
    assert _points(client, brand, "ann") == 40
