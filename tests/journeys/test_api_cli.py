"""The journeys REST API and CLI: every action, roles, errors that name the field, stats, dry runs."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from fastapi.testclient import TestClient

from lifeloop.workspaces.service import create_api_token
from tests.conftest import Brand
from tests.journeys.world import World

DEFINITION = {
    "key": "order_thanks",
    "name": {"zh-CN": "下单感谢", "en": "Order thanks"},
    "trigger": {"kind": "event", "event": "Order Completed", "where": "property.revenue >= 100"},
    "goal": {"event": "Review Submitted", "within": "7d"},
    "steps": [
        {"key": "thanks", "type": "send", "channel": "line", "template": "thanks"},
        {"key": "later", "type": "wait", "duration": "2d"},
        {"key": "ask", "type": "send", "channel": "line", "template": "thanks"},
    ],
}


def test_a_journey_through_the_api(client: TestClient, engine: sa.Engine, brand: Brand) -> None:
    world = World(engine, brand)
    world.template("thanks", text='謝謝 {{ profile.traits.name | default: "朋友" }}')
    h = brand.bearer
    created = client.post("/api/v1/journeys", json={"definition": DEFINITION}, headers=h)
    assert created.status_code == 201, created.text
    assert created.json()["status"] == "draft"
    # A draft reaches nobody; the dry run shows what it would have done over stored events.
    world.now -= timedelta(days=3)
    world.send("ann", "Order Completed", {"revenue": 300})
    world.send("bob", "Order Completed", {"revenue": 50})
    world.now += timedelta(days=1)
    world.send("ann", "Review Submitted", {})
    dry = client.post("/api/v1/journeys/order_thanks/dry-run", json={"days": 7}, headers=h).json()
    assert dry["entered"] == 1 and dry["messaged"] == 1 and dry["converted"] == 1
    assert dry["exited"] == {"goal": 1}
    assert world.sends() == []

    published = client.post("/api/v1/journeys/order_thanks/publish", headers=h)
    assert published.json()["version"] == 1 and published.json()["status"] == "active"
    world.now += timedelta(days=2)
    world.send("cid", "Order Completed", {"revenue": 120})
    assert world.sends() == [("cid", "line", "thanks")]
    stats = client.get("/api/v1/journeys/order_thanks/stats", headers=h).json()
    assert stats["entered"] == 1 and stats["waiting"] == 1
    assert stats["steps"]["thanks"]["outcomes"] == {"queued": 1}
    assert stats["messages"]["by_status"] == {"queued": 1}

    paused = client.post("/api/v1/journeys/order_thanks/pause", headers=h)
    assert paused.json()["status"] == "paused"
    entry = client.post("/api/v1/journeys/order_thanks/entries", json={"profile_ids": [1]}, headers=h)
    assert entry.status_code == 409
    client.post("/api/v1/journeys/order_thanks/resume", headers=h)
    entry = client.post(
        "/api/v1/journeys/order_thanks/entries",
        json={"profile_ids": [world.pid("bob")]},
        headers={**h, "Idempotency-Key": "k1"},
    )
    assert entry.json()["entered"] == 1
    again = client.post(
        "/api/v1/journeys/order_thanks/entries",
        json={"profile_ids": [world.pid("bob")]},
        headers={**h, "Idempotency-Key": "k1"},
    )
    assert again.json()["entered"] == 0
    runs = client.get(f"/api/v1/profiles/{world.pid('bob')}/journeys", headers=h).json()
    assert [r["journey"] for r in runs] == ["order_thanks"]
    assert client.get("/api/v1/journeys/order_thanks/versions", headers=h).json()[0]["version"] == 1
    assert client.get("/api/v1/journeys/schema", headers=h).json()["title"] == "Definition"


def test_bad_definitions_and_roles_are_refused(client: TestClient, engine: sa.Engine, brand: Brand) -> None:
    h = brand.bearer
    bad = {**DEFINITION, "steps": [{"key": "later", "type": "wait", "duration": "two days"}]}
    response = client.post("/api/v1/journeys", json={"definition": bad}, headers=h)
    assert response.status_code == 400
    assert response.json()["field"] == "steps[0] (later).duration" or "steps[0] (later)" in response.text
    missing = client.post("/api/v1/journeys", json={"definition": DEFINITION}, headers=h)
    assert missing.status_code == 201
    refused = client.post("/api/v1/journeys/order_thanks/publish", headers=h)
    assert refused.status_code == 400 and "no template 'thanks'" in refused.json()["message"]
    with engine.begin() as conn:
        _token, analyst = create_api_token(conn, brand.workspace_id, name="a", role="analyst")
    as_analyst = {"Authorization": f"Bearer {analyst}"}
    assert (
        client.post("/api/v1/journeys", json={"definition": DEFINITION}, headers=as_analyst).status_code
        == 403
    )
    assert client.get("/api/v1/journeys", headers=as_analyst).status_code == 200


def test_the_published_schema_is_the_one_the_code_checks() -> None:
    import json
    from pathlib import Path

    from lifeloop.journeys.definition import json_schema

    published = json.loads((Path(__file__).parents[2] / "docs" / "journey.schema.json").read_text("utf-8"))
    assert published == json_schema(), (
        "run the snippet in docs/journeys.md to refresh docs/journey.schema.json"
    )
