"""POST /webhooks/line/{workspace}: signed LINE events become track calls, once each."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from lifeloop.messaging.channels.config import save_config
from lifeloop.messaging.channels.line import signature
from lifeloop.profiles.resolver import resolve_pending
from lifeloop.profiles.service import find_by_identity, get_profile
from tests.conftest import Brand, snapshot
from tests.messaging.inbound.helpers import stored_events

SECRET = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
USER = "U1234567890abcdef1234567890abcdef"


@pytest.fixture
def line_brand(engine: sa.Engine, brand: Brand) -> Brand:
    with engine.begin() as conn:
        save_config(
            conn,
            brand.workspace_id,
            channel="line",
            credentials={"channel_access_token": "tok", "channel_secret": SECRET},
        )
    return brand


def event(kind: str, event_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "type": kind,
        "mode": "active",
        "timestamp": 1763870400000,
        "source": {"type": "user", "userId": USER},
        "webhookEventId": event_id,
        "deliveryContext": {"isRedelivery": False},
        **extra,
    }


EVENTS = [
    event("follow", "01HFOLLOW", replyToken="rt-1", follow={"isUnblocked": False}),
    event(
        "message",
        "01HMESSAGE",
        replyToken="rt-2",
        message={"id": "468789577898262530", "type": "text", "text": "我想問價格"},
    ),
    event("postback", "01HPOSTBACK", replyToken="rt-3", postback={"data": "action=coupon&id=11"}),
    event("unfollow", "01HUNFOLLOW"),
    event("join", "01HJOIN"),  # not recorded
]


def post(client: TestClient, body: bytes, sig: str | None, slug: str = "acme") -> Any:
    headers = {"Content-Type": "application/json"}
    if sig is not None:
        headers["X-Line-Signature"] = sig
    return client.post(f"/webhooks/line/{slug}", content=body, headers=headers)


def test_signed_events_are_recorded_as_track_calls(
    client: TestClient, engine: sa.Engine, line_brand: Brand
) -> None:
    body = orjson.dumps({"destination": "Ubot", "events": EVENTS})
    response = post(client, body, signature(SECRET, body))
    assert response.status_code == 200 and response.json()["accepted"] == 4
    stored = stored_events(engine, line_brand.workspace_id)
    assert [(e["event"], e["message_id"]) for e in stored] == [
        ("Channel Followed", "01HFOLLOW"),
        ("Message Received", "01HMESSAGE"),
        ("Menu Clicked", "01HPOSTBACK"),
        ("Channel Unfollowed", "01HUNFOLLOW"),
    ]
    follow, message, postback, _ = stored
    assert follow["context"]["externalIds"] == [{"type": "line_user_id", "id": USER, "collection": "users"}]
    assert follow["properties"] == {
        "channel": "line",
        "destination": "Ubot",
        "is_unblocked": False,
        "reply_token": "rt-1",
    }
    assert message["properties"]["text"] == "我想問價格" and message["properties"]["message_type"] == "text"
    assert postback["properties"]["data"] == "action=coupon&id=11"
    assert follow["timestamp"].isoformat() == "2025-11-23T04:00:00+00:00"

    resolve_pending(engine)
    with engine.connect() as conn:
        pid = find_by_identity(conn, line_brand.workspace_id, "line_user_id", USER)
        assert get_profile(conn, line_brand.workspace_id, pid).event_count == 4


def test_a_redelivered_webhook_is_stored_once(
    client: TestClient, engine: sa.Engine, line_brand: Brand
) -> None:
    body = orjson.dumps({"destination": "Ubot", "events": EVENTS[:2]})
    assert post(client, body, signature(SECRET, body)).json()["accepted"] == 2
    redelivered = [{**e, "deliveryContext": {"isRedelivery": True}} for e in EVENTS[:2]]
    body2 = orjson.dumps({"destination": "Ubot", "events": redelivered})
    assert post(client, body2, signature(SECRET, body2)).json() == {
        "success": True,
        "accepted": 0,
        "duplicates": 2,
    }
    assert len(stored_events(engine, line_brand.workspace_id)) == 2


BODY = orjson.dumps({"destination": "Ubot", "events": EVENTS})


@pytest.mark.parametrize(
    ("case", "body", "sig"),
    [
        ("no signature", BODY, None),
        ("empty signature", BODY, ""),
        ("signed with another channel's secret", BODY, signature("someone-elses-secret", BODY)),
        ("body altered after signing", BODY.replace(b"01HFOLLOW", b"01HFORGED"), signature(SECRET, BODY)),
        ("signature of an empty body", BODY, signature(SECRET, b"")),
        ("hex instead of base64", BODY, "ab" * 32),
    ],
)
def test_forged_signatures_are_rejected_and_nothing_changes(
    client: TestClient, engine: sa.Engine, line_brand: Brand, case: str, body: bytes, sig: str | None
) -> None:
    before = snapshot(engine)
    response = post(client, body, sig)
    assert response.status_code == 401, case
    assert "X-Line-Signature" in response.json()["message"]
    assert snapshot(engine) == before


def test_line_verification_request_and_errors(
    client: TestClient, engine: sa.Engine, line_brand: Brand
) -> None:
    empty = orjson.dumps({"destination": "Ubot", "events": []})  # what "Verify" in the console sends
    assert post(client, empty, signature(SECRET, empty)).json()["accepted"] == 0
    assert post(client, empty, signature(SECRET, empty), slug="nobody").status_code == 404
    bad = b"not json"
    assert post(client, bad, signature(SECRET, bad)).status_code == 400


def test_a_workspace_without_line_configured_is_404(client: TestClient, brand: Brand) -> None:
    body = orjson.dumps({"events": []})
    response = post(client, body, signature(SECRET, body))
    assert response.status_code == 404 and "line" in response.json()["message"]


def test_a_follow_queues_the_channel_welcome_once(
    client: TestClient, engine: sa.Engine, brand: Brand
) -> None:
    from lifeloop.messaging.models import outbox
    from lifeloop.messaging.templates.service import create_template

    with engine.begin() as conn:
        save_config(
            conn,
            brand.workspace_id,
            channel="line",
            credentials={"channel_access_token": "tok", "channel_secret": SECRET},
            settings={"welcome_template": "welcome"},
        )
        create_template(
            conn,
            brand.workspace_id,
            key="welcome",
            channel="line",
            variants={"en": {"text": "Welcome to Lumi Tea!"}, "zh-TW": {"text": "歡迎加入茶光！"}},
        )
    body = orjson.dumps({"destination": "Ubot", "events": EVENTS})
    for _ in range(2):  # LINE redelivers: still one welcome
        assert post(client, body, signature(SECRET, body)).status_code == 200
    with engine.connect() as conn:
        queued = conn.execute(
            sa.select(outbox.c.idempotency_key, outbox.c.channel, outbox.c.status, outbox.c.content).where(
                outbox.c.workspace_id == brand.workspace_id
            )
        ).all()
        recipients = conn.execute(
            sa.select(outbox.c.profile_id, outbox.c.recipient).where(
                outbox.c.workspace_id == brand.workspace_id
            )
        ).all()
    assert [(k, c, s) for k, c, s, _ in queued] == [("welcome:01HFOLLOW", "line", "queued")]
    # A new friend is not resolved yet: the welcome goes to the LINE user id, within the webhook call.
    assert queued[0].content["text"] == "Welcome to Lumi Tea!" and recipients == [(None, USER)]
