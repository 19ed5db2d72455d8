"""The Segment-compatible endpoints: every call type, auth, de-duplication, clock skew, gzip."""

from __future__ import annotations

import base64
import gzip
from datetime import UTC, datetime, timedelta

import orjson
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from lifeloop.events.models import events
from tests.conftest import Brand

ALL_CALLS = [
    ("track", {"userId": "u1", "event": "Order Completed", "properties": {"revenue": 120.5}}),
    ("identify", {"userId": "u1", "traits": {"name": "Ann", "email": "Ann@Example.com"}}),
    ("page", {"anonymousId": "a1", "name": "Home", "category": "booking", "properties": {"path": "/"}}),
    ("screen", {"userId": "u1", "name": "Cart"}),
    ("group", {"userId": "u1", "groupId": "g1", "traits": {"plan": "pro"}}),
    ("alias", {"userId": "u1", "previousId": "a1"}),
]


def stored(engine: sa.Engine, workspace_id: int) -> list[dict]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(events).where(events.c.workspace_id == workspace_id).order_by(events.c.id)
        )
        return [dict(r._mapping) for r in rows]


@pytest.mark.parametrize(("call", "body"), ALL_CALLS, ids=[c for c, _ in ALL_CALLS])
def test_each_call_type_is_stored(
    client: TestClient, engine: sa.Engine, brand: Brand, call: str, body: dict
) -> None:
    response = client.post(f"/v1/{call}", json={**body, "messageId": f"m-{call}"}, auth=brand.auth)
    assert response.status_code == 200, response.text
    assert response.json() == {"success": True, "accepted": 1, "duplicates": 0}
    (row,) = stored(engine, brand.workspace_id)
    assert row["type"] == call
    assert row["message_id"] == f"m-{call}"
    assert row["source_id"] == brand.source_id
    if call == "track":
        assert row["event"] == "Order Completed"
        assert row["properties"] == {"revenue": 120.5}
    if call == "page":
        assert row["name"] == "Home"
        assert row["properties"] == {"path": "/", "name": "Home", "category": "booking"}
    if call == "group":
        assert row["group_id"] == "g1"
        assert row["traits"] == {"plan": "pro"}
    if call == "alias":
        assert row["previous_id"] == "a1"


def test_batch_and_import_store_every_message(client: TestClient, engine: sa.Engine, brand: Brand) -> None:
    batch = [{**body, "type": call, "messageId": f"b-{call}"} for call, body in ALL_CALLS]
    response = client.post("/v1/batch", json={"batch": batch}, auth=brand.auth)
    assert response.json() == {"success": True, "accepted": 6, "duplicates": 0}
    response = client.post("/v1/import", json={"batch": [{**batch[0], "messageId": "i-1"}]}, auth=brand.auth)
    assert response.json()["accepted"] == 1
    assert [r["message_id"] for r in stored(engine, brand.workspace_id)] == [
        *(f"b-{c}" for c, _ in ALL_CALLS),
        "i-1",
    ]


def test_write_key_in_body(client: TestClient, engine: sa.Engine, brand: Brand) -> None:
    body = {"writeKey": brand.write_key, "userId": "u1", "event": "Signed Up"}
    assert client.post("/v1/track", json=body).status_code == 200
    assert len(stored(engine, brand.workspace_id)) == 1


def test_message_id_deduplicates_retries_and_repeats_in_a_batch(
    client: TestClient, engine: sa.Engine, brand: Brand
) -> None:
    one = {"type": "track", "userId": "u1", "event": "Clicked", "messageId": "same"}
    first = client.post(
        "/v1/batch", json={"batch": [one, one, {**one, "messageId": "other"}]}, auth=brand.auth
    )
    assert first.json() == {"success": True, "accepted": 2, "duplicates": 1}
    retry = client.post("/v1/batch", json={"batch": [one, {**one, "messageId": "other"}]}, auth=brand.auth)
    assert retry.json() == {"success": True, "accepted": 0, "duplicates": 2}
    single_retry = client.post("/v1/track", json=one, auth=brand.auth)
    assert single_retry.json() == {"success": True, "accepted": 0, "duplicates": 1}
    assert sorted(r["message_id"] for r in stored(engine, brand.workspace_id)) == ["other", "same"]


def test_missing_message_id_is_generated(client: TestClient, engine: sa.Engine, brand: Brand) -> None:
    client.post("/v1/track", json={"userId": "u1", "event": "A"}, auth=brand.auth)
    client.post("/v1/track", json={"userId": "u1", "event": "A"}, auth=brand.auth)
    ids = [r["message_id"] for r in stored(engine, brand.workspace_id)]
    assert len(set(ids)) == 2 and all(i.startswith("ll-") for i in ids)


def test_timestamp_is_corrected_for_device_clock_skew(
    client: TestClient, engine: sa.Engine, brand: Brand
) -> None:
    # The device clock runs 2 hours fast; the event happened 30 s before the device sent it.
    skew = timedelta(hours=2)
    now = datetime.now(UTC)
    device_sent = now + skew
    device_event = device_sent - timedelta(seconds=30)
    body = {
        "userId": "u1",
        "event": "Tapped",
        "timestamp": device_event.isoformat(),
        "sentAt": device_sent.isoformat(),
    }
    before = datetime.now(UTC)
    client.post("/v1/track", json=body, auth=brand.auth)
    after = datetime.now(UTC)
    (row,) = stored(engine, brand.workspace_id)
    assert before <= row["received_at"] <= after
    assert row["timestamp"] == row["received_at"] - timedelta(seconds=30)
    assert row["original_timestamp"] == device_event
    assert row["sent_at"] == device_sent


def test_timestamp_without_sent_at_is_kept_and_missing_timestamp_is_receipt(
    client: TestClient, engine: sa.Engine, brand: Brand
) -> None:
    client.post(
        "/v1/track",
        json={"userId": "u1", "event": "Old", "timestamp": "2024-03-01T10:00:00+08:00"},
        auth=brand.auth,
    )
    client.post("/v1/track", json={"userId": "u1", "event": "Now"}, auth=brand.auth)
    old, new = stored(engine, brand.workspace_id)
    assert old["timestamp"] == datetime(2024, 3, 1, 2, 0, tzinfo=UTC)
    assert new["timestamp"] == new["received_at"]
    assert new["original_timestamp"] is None


def test_batch_level_context_and_sent_at_apply_to_each_message(
    client: TestClient, engine: sa.Engine, brand: Brand
) -> None:
    sent = datetime.now(UTC) + timedelta(minutes=10)
    body = {
        "batch": [
            {
                "type": "track",
                "userId": "u1",
                "event": "A",
                "timestamp": (sent - timedelta(seconds=5)).isoformat(),
            },
            {
                "type": "track",
                "userId": "u1",
                "event": "B",
                "context": {"ip": "1.2.3.4", "library": {"name": "x"}},
            },
        ],
        "context": {"library": {"name": "analytics-python"}, "locale": "zh-TW"},
        "sentAt": sent.isoformat(),
    }
    client.post("/v1/batch", json=body, auth=brand.auth)
    a, b = stored(engine, brand.workspace_id)
    assert a["context"] == {"library": {"name": "analytics-python"}, "locale": "zh-TW"}
    assert b["context"] == {"library": {"name": "x"}, "locale": "zh-TW", "ip": "1.2.3.4"}
    assert a["timestamp"] == a["received_at"] - timedelta(seconds=5)


def test_context_integrations_and_unknown_fields_are_kept(
    client: TestClient, engine: sa.Engine, brand: Brand
) -> None:
    body = {
        "userId": "u1",
        "event": "Viewed",
        "context": {"campaign": {"source": "line"}, "traits": {"vip": True}},
        "integrations": {"All": False, "Mixpanel": True},
        "channel": "server",
        "version": 2,
        "customTopLevel": {"nested": [1, 2]},
    }
    client.post("/v1/track", json=body, auth=brand.auth)
    (row,) = stored(engine, brand.workspace_id)
    assert row["context"] == body["context"]
    assert row["integrations"] == body["integrations"]
    assert row["extra"] == {"channel": "server", "version": 2, "customTopLevel": {"nested": [1, 2]}}


def test_gzip_body_is_accepted(client: TestClient, engine: sa.Engine, brand: Brand) -> None:
    body = {"batch": [{"type": "track", "userId": "u1", "event": "Zipped", "messageId": "z"}]}
    response = client.post(
        "/v1/batch",
        content=gzip.compress(orjson.dumps(body)),
        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
        auth=brand.auth,
    )
    assert response.status_code == 200, response.text
    assert stored(engine, brand.workspace_id)[0]["event"] == "Zipped"


def test_numeric_user_id_is_stored_as_text(client: TestClient, engine: sa.Engine, brand: Brand) -> None:
    client.post("/v1/identify", json={"userId": 42, "traits": {}}, auth=brand.auth)
    assert stored(engine, brand.workspace_id)[0]["user_id"] == "42"


def test_basic_auth_header_with_password_part(client: TestClient, engine: sa.Engine, brand: Brand) -> None:
    token = base64.b64encode(f"{brand.write_key}:".encode()).decode()
    response = client.post(
        "/v1/track", json={"userId": "u", "event": "E"}, headers={"Authorization": f"Basic {token}"}
    )
    assert response.status_code == 200
