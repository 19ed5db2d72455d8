"""REST: send a test message, list and read deliveries, consent per channel, the contact policy."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from lifeloop.messaging.delivery_worker import Adapters
from lifeloop.workspaces.service import create_api_token
from tests.conftest import Brand, make_brand, snapshot
from tests.fakes.webhook_server import FakeWebhookServer
from tests.messaging.helpers import drain, make_profile


def test_send_a_test_message_and_follow_its_delivery(
    client: TestClient, engine: sa.Engine, brand: Brand, webhook: FakeWebhookServer, adapters: Adapters
) -> None:
    body = {"channel": "webhook", "recipient": webhook.url, "content": {"text": "hello"}}
    created = client.post(
        "/api/v1/messages/test", json=body, headers={**brand.bearer, "Idempotency-Key": "t-1"}
    )
    assert created.status_code == 202, created.text
    delivery = created.json()
    assert (delivery["status"], delivery["idempotency_key"], delivery["transactional"]) == (
        "queued",
        "t-1",
        True,
    )
    again = client.post(
        "/api/v1/messages/test", json=body, headers={**brand.bearer, "Idempotency-Key": "t-1"}
    )
    assert (again.status_code, again.json()["id"]) == (200, delivery["id"])

    drain(engine, adapters)
    assert list(webhook.accepted) == ["t-1"]
    one = client.get(f"/api/v1/deliveries/{delivery['id']}", headers=brand.bearer).json()
    assert one["status"] == "delivered" and one["provider_message_id"] == webhook.accepted["t-1"]["_id"]
    assert [a["status"] for a in one["attempt_log"]] == ["delivered"]


def test_list_deliveries_with_filters_and_cursor(
    client: TestClient, engine: sa.Engine, brand: Brand, webhook: FakeWebhookServer, adapters: Adapters
) -> None:
    for i in range(5):
        body = {
            "channel": "webhook",
            "recipient": webhook.url,
            "content": {"text": str(i)},
            "idempotency_key": f"k{i}",
        }
        assert client.post("/api/v1/messages/test", json=body, headers=brand.bearer).status_code == 202
    drain(engine, adapters)
    body = {
        "channel": "webhook",
        "recipient": webhook.url,
        "content": {"text": "later"},
        "idempotency_key": "k5",
    }
    client.post("/api/v1/messages/test", json=body, headers=brand.bearer)

    seen, cursor = [], None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = client.get("/api/v1/deliveries", params=params, headers=brand.bearer).json()
        seen += [d["idempotency_key"] for d in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ["k5", "k4", "k3", "k2", "k1", "k0"]
    queued = client.get("/api/v1/deliveries", params={"status": "queued"}, headers=brand.bearer).json()
    assert [d["idempotency_key"] for d in queued["items"]] == ["k5"]
    delivered = client.get(
        "/api/v1/deliveries", params={"status": "delivered", "channel": "webhook"}, headers=brand.bearer
    )
    assert len(delivered.json()["items"]) == 5


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "field"),
    [
        (
            "post",
            "/api/v1/messages/test",
            {"channel": "fax", "recipient": "x", "content": {"t": 1}},
            400,
            None,
        ),
        ("post", "/api/v1/messages/test", {"channel": "webhook", "content": {"t": 1}}, 400, "recipient"),
        (
            "post",
            "/api/v1/messages/test",
            {"channel": "webhook", "recipient": "x", "content": {}},
            400,
            "content",
        ),
        (
            "post",
            "/api/v1/messages/test",
            {"channel": "sms", "profile_id": 999, "content": {"text": "x"}},
            404,
            None,
        ),
        ("get", "/api/v1/deliveries?status=lost", None, 400, "status"),
        ("get", "/api/v1/deliveries?cursor=nonsense", None, 400, "cursor"),
        ("get", "/api/v1/deliveries/999", None, 404, None),
        ("put", "/api/v1/profiles/999/consent/sms", {"status": "unsubscribed"}, 404, None),
        (
            "put",
            "/api/v1/contact-policy",
            {"caps": {"regular": {"limit": -1, "days": 7}}},
            400,
            "caps.regular.limit",
        ),
        ("put", "/api/v1/contact-policy", {"quiet_hours_start": "25:00"}, 400, "quiet_hours_start"),
        ("put", "/api/v1/contact-policy", {"fallback": {"line": ["fax"]}}, 400, None),
        ("put", "/api/v1/contact-policy", {"speed": "ludicrous"}, 400, "speed"),
    ],
)
def test_bad_input_is_refused_and_changes_nothing(
    client: TestClient,
    engine: sa.Engine,
    brand: Brand,
    method: str,
    path: str,
    body: dict | None,
    status: int,
    field: str | None,
) -> None:
    before = snapshot(engine)
    response = client.request(method, path, json=body, headers=brand.bearer)
    assert response.status_code == status, response.text
    if field:
        assert response.json().get("field") == field
    assert snapshot(engine) == before


def test_consent_endpoint_and_unsubscribed_profile_gets_nothing(
    client: TestClient, engine: sa.Engine, brand: Brand, webhook: FakeWebhookServer, adapters: Adapters
) -> None:
    pid = make_profile(engine, brand, "u1")
    put = client.put(
        f"/api/v1/profiles/{pid}/consent/webhook",
        json={"status": "unsubscribed", "source": "form"},
        headers=brand.bearer,
    )
    assert put.status_code == 200 and put.json()["status"] == "unsubscribed"
    listed = client.get(f"/api/v1/profiles/{pid}/consent", headers=brand.bearer).json()
    assert [(c["channel"], c["status"], c["source"]) for c in listed] == [("webhook", "unsubscribed", "form")]
    body = {"channel": "webhook", "profile_id": pid, "recipient": webhook.url, "content": {"text": "x"}}
    delivery = client.post("/api/v1/messages/test", json=body, headers=brand.bearer).json()
    drain(engine, adapters)
    assert webhook.received == []
    one = client.get(f"/api/v1/deliveries/{delivery['id']}", headers=brand.bearer).json()
    assert one["status"] == "suppressed" and one["last_error"] == "consent withdrawn on webhook"


def test_contact_policy_defaults_and_changes(client: TestClient, brand: Brand) -> None:
    policy = client.get("/api/v1/contact-policy", headers=brand.bearer).json()
    assert policy["caps"]["high_value"] == {"limit": 5, "days": 7}
    assert (policy["quiet_hours_start"], policy["quiet_hours_end"]) == ("23:00:00", "08:00:00")
    assert policy["best_windows_weekday"] == [
        {"start": "12:00:00", "end": "13:30:00"},
        {"start": "19:00:00", "end": "21:00:00"},
    ]
    changed = client.put("/api/v1/contact-policy", json={"quiet_hours_start": "22:00"}, headers=brand.bearer)
    assert changed.status_code == 200 and changed.json()["quiet_hours_start"] == "22:00:00"
    again = client.get("/api/v1/contact-policy", headers=brand.bearer).json()
    assert again["quiet_hours_start"] == "22:00:00" and again["caps"] == policy["caps"]


def test_roles_and_workspaces(
    client: TestClient, engine: sa.Engine, brand: Brand, webhook: FakeWebhookServer
) -> None:
    with engine.begin() as conn:
        _, viewer = create_api_token(conn, brand.workspace_id, name="v", role="viewer")
    body = {"channel": "webhook", "recipient": webhook.url, "content": {"text": "x"}}
    viewer_headers = {"Authorization": f"Bearer {viewer}"}
    assert client.post("/api/v1/messages/test", json=body, headers=viewer_headers).status_code == 403
    assert client.put("/api/v1/contact-policy", json={}, headers=viewer_headers).status_code == 403
    assert client.get("/api/v1/deliveries", headers=viewer_headers).status_code == 200
    delivery = client.post("/api/v1/messages/test", json=body, headers=brand.bearer).json()
    other = make_brand(engine, "other")
    assert client.get(f"/api/v1/deliveries/{delivery['id']}", headers=other.bearer).status_code == 404
    assert client.get("/api/v1/deliveries", headers=other.bearer).json()["items"] == []
