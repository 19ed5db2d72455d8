"""New-user tasks: complete the profile, browse, add to cart, follow the official account (a real
LINE follow webhook), each rewarded once within the window after the customer was first seen."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from lifeloop.engagement.points.ledger import balance
from lifeloop.engagement.points.settings import save_section
from lifeloop.engagement.points.tasks import task_progress
from lifeloop.messaging.channels.config import save_config
from lifeloop.messaging.channels.line import signature
from lifeloop.profiles.resolver import resolve_pending
from lifeloop.profiles.service import find_by_identity
from tests.conftest import TEST_SECRET_KEY, Brand

from .points_helpers import NOW, assert_ledger_balances, customers, identify, ingest, track

LINE_SECRET = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
LINE_USER = "U1234567890abcdef1234567890abcdef"


def _progress(engine: sa.Engine, ws: int, profile: int, now: datetime = NOW) -> dict[str, bool]:
    with engine.connect() as conn:
        return {t["task"]: t["done"] for t in task_progress(conn, ws, profile, now=now)["tasks"]}


def _points(engine: sa.Engine, ws: int, profile: int, now: datetime = NOW + timedelta(days=30)) -> int:
    with engine.connect() as conn:
        return balance(conn, ws, profile, now=now)


def test_each_task_is_rewarded_once_within_the_window(
    client: TestClient, engine: sa.Engine, brand: Brand
) -> None:
    ws = brand.workspace_id
    ann, bob = customers(client, brand, "ann", "bob", now=NOW)
    assert _progress(engine, ws, ann) == dict.fromkeys(
        ("complete_profile", "browse", "add_to_cart", "follow"), False
    )
    day = timedelta(days=1)
    ingest(
        client,
        brand,
        [
            identify("ann", "i-1", NOW + day, name="Ann"),  # the phone is still missing
            track("ann", "Product Viewed", "v-1", NOW + day, sku="tea"),
            track("ann", "Product Viewed", "v-2", NOW + day, sku="cup"),  # browsing again pays nothing
            track("ann", "Product Added", "a-1", NOW + day, sku="tea"),
        ],
        now=NOW + day,
    )
    assert _progress(engine, ws, ann) == {
        "complete_profile": False,
        "browse": True,
        "add_to_cart": True,
        "follow": False,
    }
    assert _points(engine, ws, ann) == 5 + 10
    ingest(client, brand, [identify("ann", "i-2", NOW + 2 * day, phone="+886912345678")], now=NOW + 2 * day)
    ingest(client, brand, [identify("ann", "i-3", NOW + 3 * day, phone="+886912345679")], now=NOW + 3 * day)
    ingest(
        client,
        brand,
        [track("ann", "Channel Followed", "f-1", NOW + 3 * day, channel="wecom")],
        now=NOW + 3 * day,
    )
    assert all(_progress(engine, ws, ann).values())
    assert _points(engine, ws, ann) == 5 + 10 + 20 + 20
    assert assert_ledger_balances(engine, ws, ann)["earned"] == 55
    # past the window (7 days after first seen) a task no longer counts
    late = NOW + timedelta(days=7, minutes=1)
    ingest(client, brand, [track("bob", "Product Viewed", "v-9", late)], now=late)
    with engine.connect() as conn:
        progress = task_progress(conn, ws, bob, now=late)
    assert progress["open"] is False and not any(t["done"] for t in progress["tasks"])
    assert _points(engine, ws, bob) == 0


def test_a_line_follow_completes_the_follow_task(
    client: TestClient, engine: sa.Engine, brand: Brand, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LIFELOOP_SECRET_KEY", TEST_SECRET_KEY)
    ws = brand.workspace_id
    with engine.begin() as conn:
        save_config(
            conn,
            ws,
            channel="line",
            credentials={"channel_access_token": "tok", "channel_secret": LINE_SECRET},
        )
        # only following is rewarded: a task left out would keep its default reward, 0 turns it off
        off = {"complete_profile": 0, "browse": 0, "add_to_cart": 0}
        save_section(conn, ws, "tasks", {"rewards": {**off, "follow": 50}}, now=NOW)
    followed_at = datetime(2025, 11, 23, 4, 0, tzinfo=UTC)
    follow = {
        "type": "follow",
        "mode": "active",
        "timestamp": int(followed_at.timestamp() * 1000),
        "source": {"type": "user", "userId": LINE_USER},
        "webhookEventId": "01HFOLLOW",
        "deliveryContext": {"isRedelivery": False},
        "follow": {"isUnblocked": False},
    }
    body = orjson.dumps({"destination": "Ubot", "events": [follow]})
    answer = client.post(
        "/webhooks/line/acme",
        content=body,
        headers={"Content-Type": "application/json", "X-Line-Signature": signature(LINE_SECRET, body)},
    )
    assert answer.status_code == 200
    resolve_pending(engine, now=followed_at + timedelta(seconds=5))
    with engine.connect() as conn:
        follower = find_by_identity(conn, ws, "line_user_id", LINE_USER)
        tasks = {t["task"]: t for t in task_progress(conn, ws, follower, now=followed_at)["tasks"]}
    assert list(tasks) == ["follow"] and tasks["follow"]["done"] and tasks["follow"]["points"] == 50
    assert _points(engine, ws, follower, followed_at) == 50  # valid a year from the follow
