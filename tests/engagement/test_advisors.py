"""Seed 001's VIP flow end to end: spend crosses the threshold → VIP tag → a follow-up task in the advisor's
list → one WeCom application message to the advisor, sent once even across repeated sweeps, failures and a
sender that died between sending and recording."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from lifeloop.config import Settings
from lifeloop.engagement.advisors import notify, service, tasks
from lifeloop.engagement.advisors.assignment import assign
from lifeloop.engagement.advisors.models import advisor_notifications
from lifeloop.engagement.sweeps import sweep
from lifeloop.messaging.channels import wecom
from lifeloop.messaging.channels.config import save_config
from lifeloop.profiles.resolver import resolve_pending
from lifeloop.store.schema import utcnow
from tests.audience.helpers import emitted
from tests.conftest import TEST_SECRET_KEY, Brand
from tests.fakes.wecom import FakeWeCom

CORP, AGENT = "ww5823bf96d3bd56c7", 1000002
SEND = "/cgi-bin/message/send"


@pytest.fixture(autouse=True)
def secret_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIFELOOP_SECRET_KEY", TEST_SECRET_KEY)


@pytest.fixture
def fake() -> Iterator[FakeWeCom]:
    wecom.TOKENS._tokens.clear()
    with FakeWeCom(corp_id=CORP, secret="contact-secret") as server:
        server.add_app(AGENT, "app-secret", {"lisi", "wangwu"})
        yield server


def vip_workspace(client: TestClient, engine: sa.Engine, brand: Brand, fake: FakeWeCom) -> dict[str, Any]:
    """Seed 001's set-up, as an operator makes it through the API: the WeCom app, the VIP tag rule, an
    advisor and the task rule on ``Tag Added`` vip."""
    h = brand.bearer
    with engine.begin() as conn:
        save_config(
            conn,
            brand.workspace_id,
            channel="wecom",
            credentials={"corp_id": CORP, "secret": "contact-secret", "agent_secret": "app-secret"},
            settings={"base_url": fake.url, "agent_id": AGENT},
        )
    rule = client.put(
        "/api/v1/tags/rules/vip", json={"condition": 'sum("Order Completed", "revenue") >= 10000'}, headers=h
    )
    assert rule.status_code == 200, rule.text
    advisor = client.post("/api/v1/advisors", json={"name": "李四", "wecom_userid": "lisi"}, headers=h)
    assert advisor.status_code == 201, advisor.text
    task_rule = client.put(
        "/api/v1/advisors/task-rules/vip-follow-up",
        json={
            "event": "Tag Added",
            "where": {"tag": "vip"},
            "title": "VIP 1v1 跟进：{{ customer.name }}",
            "description": "累计消费已达 VIP，介绍专属服务",
            "due_hours": 24,
        },
        headers=h,
    )
    assert task_rule.status_code == 200, task_rule.text
    return advisor.json()


def order(client: TestClient, brand: Brand, user: str, n: int, revenue: float) -> None:
    sent = client.post(
        "/v1/track",
        json={
            "userId": user,
            "event": "Order Completed",
            "messageId": f"{user}-o{n}",
            "properties": {"revenue": revenue},
        },
        auth=brand.auth,
    )
    assert sent.status_code == 200, sent.text


def customer(client: TestClient, brand: Brand, user: str, name: str) -> None:
    sent = client.post("/v1/identify", json={"userId": user, "traits": {"name": name}}, auth=brand.auth)
    assert sent.status_code == 200, sent.text


def tasks_of(client: TestClient, brand: Brand, advisor_id: int, **query: Any) -> list[dict[str, Any]]:
    answer = client.get(f"/api/v1/advisors/{advisor_id}/tasks", params=query, headers=brand.bearer)
    assert answer.status_code == 200, answer.text
    return answer.json()


def received(fake: FakeWeCom, touser: str) -> list[dict[str, Any]]:
    return [m for m in fake.app_messages if m["touser"] == touser]


def test_vip_by_spend_creates_a_task_and_notifies_the_advisor_once(
    client: TestClient, engine: sa.Engine, brand: Brand, fake: FakeWeCom
) -> None:
    advisor = vip_workspace(client, engine, brand, fake)
    customer(client, brand, "u1", "王小明")
    order(client, brand, "u1", 1, 4000)
    order(client, brand, "u1", 2, 4000)
    resolve_pending(engine)
    assert tasks_of(client, brand, advisor["id"]) == []  # 8000: not a VIP yet

    order(client, brand, "u1", 3, 2500)  # 10500 ≥ 10000
    resolve_pending(engine)
    (task,) = tasks_of(client, brand, advisor["id"], status="open")
    assert task["title"] == "VIP 1v1 跟进：王小明"
    assert task["description"] == "累计消费已达 VIP，介绍专属服务"
    assert task["source"] == "rule:vip-follow-up" and task["status"] == "open" and not task["overdue"]
    due_in = datetime.fromisoformat(task["due_at"]) - utcnow()
    assert timedelta(hours=23) < due_in <= timedelta(hours=24)
    assert emitted(engine, brand, "Tag Added", "u1")[0]["tag"] == "vip"
    (created,) = emitted(engine, brand, "Advisor Task Created", "u1")
    assert created["task_id"] == task["id"] and created["advisor_id"] == advisor["id"]
    (assigned,) = emitted(engine, brand, "Advisor Assigned", "u1")
    assert assigned["advisor_id"] == advisor["id"] and assigned["method"] == "round_robin"
    assert fake.calls(SEND) == []  # sent after the commit, by the sweep

    assert sweep(engine) == 1
    assert sweep(engine) == 0  # a second sweep sends nothing: the notification is settled
    (call,) = fake.calls(SEND)
    assert call.json["touser"] == "lisi" and call.json["agentid"] == AGENT and call.json["msgtype"] == "text"
    assert "王小明（u1）" in call.json["text"]["content"] and "VIP 1v1 跟进" in call.json["text"]["content"]
    assert call.json["enable_duplicate_check"] == 1
    assert len(received(fake, "lisi")) == 1
    shown = client.get(f"/api/v1/advisors/tasks/{task['id']}", headers=brand.bearer).json()
    assert [(n["touser"], n["status"], n["attempts"]) for n in shown["notifications"]] == [
        ("lisi", "sent", 1)
    ]

    # More orders keep the tag: no second task while the first is open.
    order(client, brand, "u1", 4, 500)
    resolve_pending(engine)
    assert len(tasks_of(client, brand, advisor["id"])) == 1
    # The advisor reaches the customer, who buys: done with the outcome.
    done = client.patch(
        f"/api/v1/advisors/tasks/{task['id']}",
        json={"status": "done", "outcome": "purchased", "note": "买了新品"},
        headers=brand.bearer,
    )
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "done" and done.json()["outcome"] == "purchased"
    (completed,) = emitted(engine, brand, "Advisor Task Completed", "u1")
    assert completed["outcome"] == "purchased" and completed["note"] == "买了新品"
    assert tasks_of(client, brand, advisor["id"], status="open") == []


def test_a_sender_killed_between_send_and_record_does_not_notify_twice(
    client: TestClient, engine: sa.Engine, brand: Brand, fake: FakeWeCom
) -> None:
    vip_workspace(client, engine, brand, fake)
    customer(client, brand, "u2", "陈美玲")
    order(client, brand, "u2", 1, 12000)
    resolve_pending(engine)
    now = utcnow()
    # What a killed sweep leaves: the claim committed, WeCom called, the outcome never recorded.
    (claimed,) = notify.claim_due(engine, worker_id="killed", now=now)
    assert notify.send(engine, claimed).status.value == "delivered"
    assert len(received(fake, "lisi")) == 1
    assert sweep(engine, now + timedelta(seconds=30)) == 0  # its lease still holds: nobody takes it
    assert len(fake.calls(SEND)) == 1

    later = now + timedelta(seconds=notify.LEASE_SECONDS + 1)
    assert sweep(engine, later) == 1  # taken over and sent again, the same request …
    first, second = fake.calls(SEND)
    assert first.json == second.json
    assert len(received(fake, "lisi")) == 1  # … which WeCom's duplicate check drops
    assert sweep(engine, later + timedelta(minutes=5)) == 0
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(advisor_notifications).where(advisor_notifications.c.workspace_id == brand.workspace_id)
        ).one()
    assert (row.status, row.attempts, row.claimed_by) == ("sent", 2, None)
    # The dead sender's late outcome cannot overwrite the settled row.
    assert not notify.settle(
        engine, claimed, notify.SendResult(notify.SendStatus.TRANSIENT), worker_id="killed", now=later
    )


def test_failures_are_retried_with_backoff_and_a_missing_app_waits(
    client: TestClient, engine: sa.Engine, brand: Brand, fake: FakeWeCom
) -> None:
    vip_workspace(client, engine, brand, fake)
    customer(client, brand, "u3", "林志明")
    order(client, brand, "u3", 1, 10000)
    resolve_pending(engine)
    now = utcnow()
    fake.fail_next(500, {"errcode": -1, "errmsg": "system busy"})
    assert sweep(engine, now) == 0
    with engine.connect() as conn:
        (row,) = notify.notifications_of(conn, brand.workspace_id, _only_task(engine, brand))
    assert row["status"] == "pending" and row["attempts"] == 1 and "HTTP 500" in row["last_error"]
    assert row["next_attempt_at"] >= now + timedelta(seconds=59)
    assert sweep(engine, now + timedelta(seconds=30)) == 0  # not due yet
    assert len(fake.calls(SEND)) == 1
    assert sweep(engine, now + timedelta(seconds=61)) == 1
    assert len(received(fake, "lisi")) == 1

    # An advisor who is not a member of the app: failed for good, with WeCom's reason.
    task_id = _only_task(engine, brand)
    with engine.begin() as conn:
        stranger = service.create_advisor(conn, brand.workspace_id, name="张三", wecom_userid="zhangsan")
        pid = tasks.get_task(conn, brand.workspace_id, task_id).profile_id
        assign(conn, brand.workspace_id, pid, advisor_id=stranger.id, reason="门店调整", now=now)
    assert sweep(engine, now + timedelta(seconds=62)) == 0
    with engine.connect() as conn:
        rows = notify.notifications_of(conn, brand.workspace_id, _only_task(engine, brand))
    assert [(r["touser"], r["status"]) for r in rows] == [("lisi", "sent"), ("zhangsan", "failed")]
    assert "81013" in rows[1]["last_error"]


def test_without_the_app_configured_the_notification_waits_for_it(
    client: TestClient, engine: sa.Engine, brand: Brand, fake: FakeWeCom
) -> None:
    vip_workspace(client, engine, brand, fake)
    with engine.begin() as conn:  # the channel without agent_id: application messages cannot go out
        save_config(
            conn,
            brand.workspace_id,
            channel="wecom",
            credentials={"corp_id": CORP, "secret": "contact-secret"},
            settings={"base_url": fake.url},
        )
    customer(client, brand, "u4", "黄小华")
    order(client, brand, "u4", 1, 20000)
    resolve_pending(engine)
    now = utcnow()
    assert sweep(engine, now) == 0
    with engine.connect() as conn:
        (row,) = notify.notifications_of(conn, brand.workspace_id, _only_task(engine, brand))
    assert row["status"] == "pending" and "agent_id" in row["last_error"]
    assert fake.calls(SEND) == []
    with engine.begin() as conn:
        save_config(
            conn,
            brand.workspace_id,
            channel="wecom",
            credentials={"corp_id": CORP, "secret": "contact-secret", "agent_secret": "app-secret"},
            settings={"base_url": fake.url, "agent_id": AGENT},
        )
    assert sweep(engine, now + timedelta(minutes=2)) == 1
    assert "黄小华（u4）" in received(fake, "lisi")[0]["text"]["content"]


def _only_task(engine: sa.Engine, brand: Brand) -> int:
    from lifeloop.engagement.advisors.models import advisor_tasks

    with engine.connect() as conn:
        return int(
            conn.execute(
                sa.select(advisor_tasks.c.id).where(advisor_tasks.c.workspace_id == brand.workspace_id)
            ).scalar_one()
        )


def test_a_worker_killed_while_wecom_answers_does_not_notify_twice(
    client: TestClient, engine: sa.Engine, brand: Brand, fake: FakeWeCom, settings: Settings
) -> None:
    """A real ``lifeloop worker --once`` process, SIGKILLed after WeCom delivered the message and before
    its answer arrived (so before the outcome was recorded)."""
    vip_workspace(client, engine, brand, fake)
    customer(client, brand, "u5", "周杰")
    order(client, brand, "u5", 1, 15000)
    resolve_pending(engine)
    fake.app_answer_delay = 8.0
    env = {
        **os.environ,
        "LIFELOOP_DATABASE_URL": settings.database_url,
        "LIFELOOP_SECRET_KEY": TEST_SECRET_KEY,
    }
    worker = subprocess.Popen(
        [sys.executable, "-m", "lifeloop.cli", "worker", "--once"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not received(fake, "lisi"):
            assert time.monotonic() < deadline and worker.poll() is None, "the worker sent nothing"
            time.sleep(0.05)
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
    fake.app_answer_delay = 0.0
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(advisor_notifications).where(advisor_notifications.c.workspace_id == brand.workspace_id)
        ).one()
    assert row.status == "sending" and row.claimed_by is not None  # the dead worker's claim

    assert sweep(engine, utcnow()) == 0  # the lease still holds
    assert sweep(engine, utcnow() + timedelta(seconds=notify.LEASE_SECONDS + 1)) == 1
    assert len(fake.calls(SEND)) == 2 and len(received(fake, "lisi")) == 1
    assert "周杰（u5）" in received(fake, "lisi")[0]["text"]["content"]


def test_with_a_task_url_the_advisor_gets_a_textcard(
    client: TestClient, engine: sa.Engine, brand: Brand, fake: FakeWeCom
) -> None:
    vip_workspace(client, engine, brand, fake)
    with engine.begin() as conn:
        save_config(
            conn,
            brand.workspace_id,
            channel="wecom",
            credentials={"corp_id": CORP, "secret": "contact-secret", "agent_secret": "app-secret"},
            settings={
                "base_url": fake.url,
                "agent_id": AGENT,
                "task_url": "https://crm.example.com/t/{task_id}",
            },
        )
    customer(client, brand, "u6", "吴敏")
    order(client, brand, "u6", 1, 10000)
    resolve_pending(engine)
    assert sweep(engine) == 1
    (message,) = received(fake, "lisi")
    card = message["textcard"]
    assert (
        message["msgtype"] == "textcard"
        and card["url"] == f"https://crm.example.com/t/{_only_task(engine, brand)}"
    )
    assert card["title"] == "跟进任务：VIP 1v1 跟进：吴敏" and "客户：吴敏（u6）" in card["description"]
    assert "截止：" in card["description"]


def test_a_failing_wecom_stops_the_sweep_for_that_workspace(
    client: TestClient, engine: sa.Engine, brand: Brand, fake: FakeWeCom
) -> None:
    """The sweep shares the worker's loop with event placement: after one failure it hands the
    workspace's other notifications back untried instead of waiting on WeCom for each."""
    vip_workspace(client, engine, brand, fake)
    for user, name in (("u7", "郑一"), ("u8", "郑二")):
        customer(client, brand, user, name)
        order(client, brand, user, 1, 10000)
    resolve_pending(engine)
    now = utcnow()
    fake.fail_next(500, {"errcode": -1, "errmsg": "system busy"})
    assert sweep(engine, now) == 0
    assert len(fake.calls(SEND)) == 1
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(
                advisor_notifications.c.status,
                advisor_notifications.c.attempts,
                advisor_notifications.c.last_error,
            )
            .where(advisor_notifications.c.workspace_id == brand.workspace_id)
            .order_by(advisor_notifications.c.id)
        ).all()
    assert [(r.status, r.attempts) for r in rows] == [("pending", 1), ("pending", 0)]
    assert "HTTP 500" in rows[0].last_error and rows[1].last_error is None
    assert sweep(engine, now + timedelta(seconds=61)) == 2
    assert len(received(fake, "lisi")) == 2
