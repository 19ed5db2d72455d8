"""Conditions over events that came in through the public ingest API and the resolver."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from fastapi.testclient import TestClient

from lifeloop.conditions import StoredProfile, evaluate, matching_profiles, parse
from lifeloop.profiles.computed import recompute
from lifeloop.profiles.resolver import resolve_pending
from lifeloop.profiles.service import find_by_identity
from tests.conditions.store import computed_state
from tests.conftest import Brand

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def _ts(days_ago: float) -> str:
    return (NOW - timedelta(days=days_ago)).isoformat()


MESSAGES = [
    {
        "type": "identify",
        "userId": "ann",
        "traits": {"city": "Taipei", "tags": ["coffee"]},
        "timestamp": _ts(60),
    },
    {
        "type": "page",
        "userId": "ann",
        "name": "Booking",
        "properties": {"category": "booking"},
        "timestamp": _ts(3),
    },
    {"type": "page", "userId": "ann", "properties": {"category": "booking"}, "timestamp": _ts(1)},
    {
        "type": "track",
        "userId": "ann",
        "event": "Message Received",
        "properties": {"keyword": "price"},
        "timestamp": _ts(2),
    },
    {
        "type": "track",
        "userId": "ann",
        "event": "Order Completed",
        "properties": {"revenue": 1200},
        "timestamp": _ts(100),
    },
    {"type": "track", "anonymousId": "a-bob", "event": "Menu Clicked", "timestamp": _ts(40)},
    {
        "type": "identify",
        "userId": "bob",
        "anonymousId": "a-bob",
        "traits": {"city": "Tokyo"},
        "timestamp": _ts(39),
    },
    {"type": "track", "userId": "bob", "event": "Message Delivered", "timestamp": _ts(1)},
]

CASES = [  # condition, who matches
    ('count("Page Viewed", within="14d") >= 2 and trait.city == "Taipei"', {"ann"}),
    (
        'count("Page Viewed", where=property.category == "booking", within="7d") >= 2 '
        'and count("Message Received", where=exists(property.keyword), within="7d") >= 1',
        {"ann"},
    ),
    ('sum("Order Completed", "revenue") > 1000', {"ann"}),
    ("days_since(last_active) >= 30", {"bob"}),  # a delivery is not bob's own doing
    ("days_since(last_seen) >= 30", set()),
    ("days_since(first_seen) >= 91 and days_since(last_interaction) >= 30", set()),
    ('trait.tags contains "coffee" or trait.city in ["Tokyo"]', {"ann", "bob"}),
    ('count("Menu Clicked") == 1', {"bob"}),  # the anonymous click moved with the merge
]


def test_conditions_over_ingested_events(client: TestClient, engine: sa.Engine, brand: Brand) -> None:
    batch = [{"messageId": f"m{i}", **m} for i, m in enumerate(MESSAGES)]
    assert client.post("/v1/batch", json={"batch": batch}, auth=brand.auth).status_code == 200
    resolve_pending(engine)
    ws = brand.workspace_id
    with engine.begin() as conn:
        maintained = computed_state(conn, ws)
        recompute(conn, ws)
        # Whether or not the resolver maintains them as it places events, a rebuild finds the same.
        assert maintained in ({k: [] for k in maintained}, computed_state(conn, ws))
        people = {u: find_by_identity(conn, ws, "user_id", u) for u in ("ann", "bob")}
        for text, expected in CASES:
            condition = parse(text)
            want = {people[u] for u in expected}
            assert set(matching_profiles(conn, ws, condition, now=NOW)) == want, text
            stored = {p for p in people.values() if evaluate(condition, StoredProfile(conn, ws, p, now=NOW))}
            assert stored == want, text
