"""Identical WeCom messages claimed together go to the advisor as one group-sending task
(``add_msg_template`` with many ``external_userid``), one outbox row per customer: those WeCom names in
``fail_list`` are blocked (and fall back), the others delivered; welcome messages stay one by one."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from lifeloop.events.messages import parse_message
from lifeloop.events.service import ingest
from lifeloop.messaging.channels.config import save_config
from lifeloop.messaging.models import outbox
from lifeloop.messaging.outbox import enqueue
from lifeloop.profiles.resolver import resolve_pending
from lifeloop.profiles.service import find_by_identity
from lifeloop.store.engine import connect
from lifeloop.workspaces.models import SourceKey
from tests.conftest import Brand
from tests.fakes.sms import FakeSms
from tests.fakes.wecom import FakeWeCom
from tests.messaging.outbox.test_multicast import NOON_TAIPEI, deliver, secret_key, statuses

__all__ = ["secret_key"]


@pytest.fixture
def wecom_api() -> Iterator[FakeWeCom]:
    with FakeWeCom(corp_id="wwcorp", secret="contact-secret") as server:
        yield server


SMS_BODY = {"phone": "{to}", "content": "{text}", "sign": "{sender}"}


def external(i: int) -> str:
    return f"wm{i:030d}"


def connect_wecom(engine: sa.Engine, brand: Brand, wecom_api: FakeWeCom) -> None:
    with engine.begin() as conn:
        save_config(
            conn,
            brand.workspace_id,
            channel="wecom",
            credentials={"corp_id": "wwcorp", "secret": "contact-secret"},
            settings={"base_url": wecom_api.url, "sender": "zhangsan"},
        )


def customers(engine: sa.Engine, brand: Brand, count: int, phones: bool = False) -> list[int]:
    """WeCom contacts of the brand, through ingest (in order); with ``phones``, each has a mobile too."""
    raws = [
        {
            "type": "identify",
            "userId": f"c{i}",
            "messageId": f"c{i}",
            "traits": {"wecom_external_userid": external(i)} | ({"phone": f"+8869{i:08d}"} if phones else {}),
        }
        for i in range(count)
    ]
    now = datetime.now(UTC)
    ingest(
        engine,
        SourceKey(brand.workspace_id, brand.source_id),
        [parse_message(r, received_at=now) for r in raws],
    )
    resolve_pending(engine)
    with connect(engine) as conn:
        return [find_by_identity(conn, brand.workspace_id, "user_id", f"c{i}") for i in range(count)]


def queue(engine: sa.Engine, brand: Brand, pids: list[int], content: dict[str, object], prefix: str) -> None:
    with engine.begin() as conn:
        for pid in pids:
            enqueue(conn, brand.workspace_id, channel="wecom", profile_id=pid, content=content,
                    idempotency_key=f"{prefix}:{pid}", now=NOON_TAIPEI - timedelta(minutes=1))  # fmt: skip


def test_identical_messages_become_one_advisor_task_per_claimed_batch(
    engine: sa.Engine, brand: Brand, wecom_api: FakeWeCom
) -> None:
    connect_wecom(engine, brand, wecom_api)
    pids = customers(engine, brand, 1200)
    for i in range(1195):  # five customers have since deleted the advisor
        wecom_api.contacts.setdefault("zhangsan", set()).add(external(i))
    queue(engine, brand, pids, {"text": "会员日：全场 8 折"}, "member-day")

    deliver(engine)

    tasks = wecom_api.calls("/cgi-bin/externalcontact/add_msg_template")
    assert sorted(len(call.json["external_userid"]) for call in tasks) == [200, 500, 500]
    assert {call.json["sender"] for call in tasks} == {"zhangsan"}
    assert {call.json["text"]["content"] for call in tasks} == {"会员日：全场 8 折"}
    sent_to = [user for call in tasks for user in call.json["external_userid"]]
    assert sorted(sent_to) == sorted(external(i) for i in range(1200))  # each customer in one task
    assert statuses(engine, brand) == {"delivered": 1195, "dead": 5}
    with connect(engine) as conn:
        dead = conn.execute(
            sa.select(outbox.c.recipient, outbox.c.last_error).where(
                outbox.c.workspace_id == brand.workspace_id, outbox.c.status == "dead"
            )
        ).all()
        groups = conn.execute(
            sa.select(sa.func.count(sa.distinct(outbox.c.delivery_group))).where(
                outbox.c.workspace_id == brand.workspace_id
            )
        ).scalar_one()
    assert sorted(r.recipient for r in dead) == [external(i) for i in range(1195, 1200)]
    assert all("fail_list" in r.last_error for r in dead)
    assert groups == 3


def test_a_refused_customer_falls_back_to_sms_and_welcomes_go_one_by_one(
    engine: sa.Engine, brand: Brand, wecom_api: FakeWeCom
) -> None:
    connect_wecom(engine, brand, wecom_api)
    pids = customers(engine, brand, 4, phones=True)
    for i in range(3):
        wecom_api.contacts.setdefault("zhangsan", set()).add(external(i))
    codes = [wecom_api.add_contact(external(i)) for i in (0, 1)]
    with FakeSms() as sms_api:
        with engine.begin() as conn:
            save_config(
                conn,
                brand.workspace_id,
                channel="sms",
                credentials={"auth_header": "X-Api-Key: sms-key"},
                settings={
                    "url": f"{sms_api.url}/v1/sms/send",
                    "sender": "LIFELOOP",
                    "body_template": SMS_BODY,
                },
            )
        queue(engine, brand, pids, {"text": "新品到店"}, "new-in")
        for pid, code in zip(pids[:2], codes, strict=True):
            queue(engine, brand, [pid], {"text": "欢迎加入", "welcome_code": code}, f"welcome-{code}")

        deliver(engine)
        deliver(engine, NOON_TAIPEI + timedelta(seconds=1))  # the fallback, queued by the first pass
        texts = [call.json for call in sms_api.calls("/v1/sms/send")]

    (task,) = wecom_api.calls("/cgi-bin/externalcontact/add_msg_template")
    assert sorted(task.json["external_userid"]) == [external(i) for i in range(4)]
    welcomes = wecom_api.calls("/cgi-bin/externalcontact/send_welcome_msg")
    assert sorted(call.json["welcome_code"] for call in welcomes) == sorted(codes)
    assert texts == [{"phone": "+886900000003", "content": "新品到店", "sign": "LIFELOOP"}]
    assert statuses(engine, brand) == {"delivered": 6, "suppressed": 1}


def test_a_task_wecom_refuses_fails_for_all_its_customers(
    engine: sa.Engine, brand: Brand, wecom_api: FakeWeCom
) -> None:
    connect_wecom(engine, brand, wecom_api)
    pids = customers(engine, brand, 20)
    queue(engine, brand, pids, {"text": "限时优惠", "sender": "not-an-advisor"}, "promo")

    deliver(engine)

    assert len(wecom_api.calls("/cgi-bin/externalcontact/add_msg_template")) == 1
    assert statuses(engine, brand) == {"dead": 20}
