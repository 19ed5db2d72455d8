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


def test_points_of_a_merged_profile_belong_to_the_survivor(
    client: TestClient, engine: sa.Engine, brand: Brand
) -> None:
    from lifeloop.engagement.points.ledger import account_totals, award_points, spend_points
    from lifeloop.engagement.points.models import points_accounts
    from lifeloop.engagement.points.tasks import task_progress

    ws = brand.workspace_id
    (ann,) = customers(client, brand, "ann")
    with engine.begin() as conn:
        award_points(conn, ws, ann, 50, key="gift", reason="gift", now=NOW)
    browsing = {"type": "track", "anonymousId": "anon-1", "event": "Product Viewed", "messageId": "v-1"}
    ingest(client, brand, [{**browsing, "timestamp": NOW.isoformat()}])  # an anonymous visitor's browse task
    login = {"type": "identify", "userId": "ann", "anonymousId": "anon-1", "messageId": "login-1"}
    ingest(client, brand, [{**login, "timestamp": (NOW + timedelta(minutes=1)).isoformat()}])
    survivor = pid(client, brand, "ann")
    with engine.connect() as conn:
        assert balance(conn, ws, survivor, now=NOW) == 55  # before anything moved, reads count both
        assert account_totals(conn, ws, survivor)["earned"] == 55
        assert len(history(conn, ws, survivor)) == 2
        assert {t["task"]: t["done"] for t in task_progress(conn, ws, survivor, now=NOW)["tasks"]}["browse"]
    with engine.begin() as conn:
        assert spend_points(conn, ws, survivor, 55, key="all", reason="mall", now=NOW).balance_after == 0
    with engine.connect() as conn:
        accounts = conn.execute(
            sa.select(points_accounts.c.profile_id).where(points_accounts.c.workspace_id == ws)
        )
        assert [a.profile_id for a in accounts] == [survivor]  # the merged account moved in with its points
    assert assert_ledger_balances(engine, ws, survivor, chain=False) == {
        "balance": 0,
        "earned": 55,
        "spent": 55,
        "expired": 0,
    }


def test_a_refund_takes_back_what_its_order_earned_never_below_zero(
    client: TestClient, engine: sa.Engine, brand: Brand
) -> None:
    from lifeloop.engagement.points.ledger import spend_points

    ws = brand.workspace_id
    ingest(
        client,
        brand,
        [
            track("ann", "Order Completed", "o-1", order_id="A-1", revenue=300),
            track("ann", "Order Completed", "o-2", order_id="A-2", revenue=200),
            track("ann", "Order Refunded", "x-1", order_id="A-1", revenue=100),  # a partial refund: 100 back
        ],
    )
    assert _points(client, brand, "ann") == 300 + 200 - 100
    ingest(client, brand, [track("ann", "Order Refunded", "x-2", order_id="A-1")])  # the rest of A-1
    assert _points(client, brand, "ann") == 200
    ingest(client, brand, [track("ann", "Order Refunded", "x-3", order_id="A-1")])  # nothing left to take
    ingest(
        client, brand, [track("ann", "Order Refunded", "x-4", order_id="B-9")]
    )  # an order that earned nothing
    assert _points(client, brand, "ann") == 200
    ann = pid(client, brand, "ann")
    with engine.begin() as conn:
        spend_points(conn, ws, ann, 150, key="mall", reason="mall", now=NOW)
    ingest(client, brand, [track("ann", "Order Refunded", "x-5", order_id="A-2")])
    assert _points(client, brand, "ann") == 0  # 50 were left: those are taken, the spent 150 stay spent
    again = [PlacedEvent(ann, "Order Refunded", {"order_id": "A-2"}, NOW, "x-5")]
    with engine.begin() as conn:  # the same refund placed again takes nothing more
        hooks.react(conn, ws, again, NOW)
    with engine.connect() as conn:
        reasons = [(e.kind, e.points, e.reason) for e in history(conn, ws, ann) if e.kind == "spend"]
    assert reasons == [
        ("spend", 50, "order A-2 refunded"),
        ("spend", 150, "mall"),
        ("spend", 200, "order A-1 refunded"),
        ("spend", 100, "order A-1 refunded"),
    ]
    assert assert_ledger_balances(engine, ws, ann) == {
        "balance": 0,
        "earned": 500,
        "spent": 500,
        "expired": 0,
    }
