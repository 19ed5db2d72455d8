"""Journeys through the public interfaces: a signed LINE follow webhook → the welcome playbook → a push at a
local LINE API imitation; cart abandonment over the ingest API; a rich menu that follows the journey."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import orjson
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from lifeloop.journeys.engine import run_until_idle
from lifeloop.messaging.channels.config import save_config
from lifeloop.messaging.channels.line import signature
from lifeloop.messaging.delivery_worker import Adapters, deliver_due
from lifeloop.messaging.models import outbox
from lifeloop.profiles.resolver import resolve_pending
from lifeloop.store.schema import utcnow
from tests.conftest import TEST_SECRET_KEY, Brand
from tests.fakes.line import FakeLine
from tests.journeys.world import World

SECRET = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
FRIEND = "U1234567890abcdef1234567890abcdef"


@pytest.fixture(autouse=True)
def secret_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIFELOOP_SECRET_KEY", TEST_SECRET_KEY)


@pytest.fixture
def line_api() -> Iterator[FakeLine]:
    with FakeLine(token="tok") as server:
        yield server


@pytest.fixture
def line_brand(engine: sa.Engine, brand: Brand, line_api: FakeLine) -> Brand:
    with engine.begin() as conn:
        save_config(
            conn,
            brand.workspace_id,
            channel="line",
            credentials={"channel_access_token": "tok", "channel_secret": SECRET},
            settings={"base_url": line_api.url},
        )
    return brand


def deliver(engine: sa.Engine, at: object = None) -> int:
    clock = (lambda: at) if at is not None else utcnow
    adapters = Adapters(engine)
    try:
        return deliver_due(engine, worker_id="e2e", adapters=adapters, clock=clock)  # type: ignore[arg-type]
    finally:
        adapters.close()


def follow(event_id: str, user: str = FRIEND) -> bytes:
    event = {
        "type": "follow",
        "mode": "active",
        "timestamp": int(utcnow().timestamp() * 1000),
        "source": {"type": "user", "userId": user},
        "webhookEventId": event_id,
        "replyToken": "rt",
        "deliveryContext": {"isRedelivery": False},
        "follow": {"isUnblocked": False},
    }
    return orjson.dumps({"destination": "Ubot", "events": [event]})


def pushed_to(line_api: FakeLine) -> list[str]:
    return [call.json["to"] for call in line_api.calls("/v2/bot/message/push")]


def test_a_line_follow_is_welcomed_at_once_then_told_the_story_and_followed_up(
    client: TestClient, engine: sa.Engine, line_brand: Brand, line_api: FakeLine
) -> None:
    from lifeloop.journeys.playbooks import install_playbook

    with engine.begin() as conn:
        install_playbook(conn, line_brand.workspace_id, "welcome_line", publish=True)
    body = follow("01HFOLLOW1")
    response = client.post(
        "/webhooks/line/acme", content=body, headers={"X-Line-Signature": signature(SECRET, body)}
    )
    assert response.status_code == 200
    resolve_pending(engine)  # the API process's resolver; the welcome is queued in its transaction
    with engine.connect() as conn:
        queued = conn.execute(
            sa.select(outbox.c.template).where(outbox.c.workspace_id == line_brand.workspace_id)
        )
        assert len(queued.all()) == 1
    assert deliver(engine) == 1
    assert pushed_to(line_api) == [FRIEND]
    # The next steps come with time, at an hour the contact policy lets messages out.
    noon = utcnow().replace(hour=4, minute=0) + timedelta(days=1)  # 12:00 in Taipei
    run_until_idle(engine, now=noon)
    deliver(engine, noon)
    later = noon + timedelta(hours=25)
    run_until_idle(engine, now=later)
    deliver(engine, later)
    assert pushed_to(line_api) == [FRIEND, FRIEND, FRIEND]
    # LINE redelivers the same follow: nobody is welcomed twice.
    client.post("/webhooks/line/acme", content=body, headers={"X-Line-Signature": signature(SECRET, body)})
    resolve_pending(engine)
    assert deliver(engine, later) == 0


def test_checkout_without_an_order_is_reminded_and_with_one_is_not(
    client: TestClient, engine: sa.Engine, line_brand: Brand
) -> None:
    from lifeloop.journeys.playbooks import install_playbook

    with engine.begin() as conn:
        install_playbook(conn, line_brand.workspace_id, "cart_abandonment", publish=True)
    now = utcnow()

    def track(user: str, event: str, props: dict, n: int) -> None:
        message = {"userId": user, "event": event, "properties": props, "messageId": f"{user}-{n}",
                   "timestamp": now.isoformat()}  # fmt: skip
        assert client.post("/v1/track", json=message, auth=line_brand.auth).status_code == 200

    track("ann", "Checkout Started", {"cart_id": "c-ann", "revenue": 900}, 1)
    track("bob", "Checkout Started", {"cart_id": "c-bob", "revenue": 450}, 1)
    track("bob", "Order Completed", {"cart_id": "c-bob", "revenue": 450}, 2)
    resolve_pending(engine)
    run_until_idle(engine, now=now + timedelta(days=2))
    world = World(engine, line_brand)
    assert world.sends() == [("ann", "line", "cart_abandonment.reminder")]


def test_a_rich_menu_step_links_the_menu_at_line(
    engine: sa.Engine, line_brand: Brand, line_api: FakeLine
) -> None:
    world = World(engine, line_brand)
    world.journey(
        {
            "key": "menu_follows_stage",
            "name": {"zh-CN": "选单跟随阶段", "en": "Menu follows the stage"},
            "trigger": {"kind": "event", "event": "Order Completed"},
            "steps": [{"key": "loyal_menu", "type": "line_rich_menu", "rich_menu_id": "richmenu-loyal"}],
        }
    )
    world.send("ann", "Order Completed", {"revenue": 1}, context={"externalIds": [
        {"type": "line_user_id", "id": FRIEND, "collection": "users"}]})  # fmt: skip
    assert deliver(engine) == 1
    assert line_api.rich_menus == {FRIEND: "richmenu-loyal"}
