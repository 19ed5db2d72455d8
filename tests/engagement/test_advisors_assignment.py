"""Assigning customers to advisors: round-robin (even under concurrent assignments), by store, by channel
of arrival, by the advisor a customer added on WeCom, manually with a reason, and when an advisor leaves;
and tasks made with a key (a journey step's), idempotent."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from lifeloop.engagement.advisors import assignment, notify, service, tasks
from lifeloop.engagement.advisors.models import advisor_assignments
from lifeloop.errors import InvalidInput, NotFound
from lifeloop.events.messages import parse_message
from lifeloop.events.service import ingest
from lifeloop.messaging.channels import wecom
from lifeloop.messaging.channels.config import save_config
from lifeloop.profiles.resolver import resolve_pending
from lifeloop.profiles.service import find_by_identity
from lifeloop.store.engine import connect, transaction
from lifeloop.store.schema import utcnow
from lifeloop.workspaces.models import SourceKey
from tests.audience.helpers import emitted
from tests.conftest import TEST_SECRET_KEY, Brand, snapshot
from tests.fakes.wecom import FakeWeCom, WeComCallbackSender, add_contact_xml


def people(engine: sa.Engine, brand: Brand, n: int, *, traits: Any = None, context: Any = None) -> list[int]:
    """``n`` customers made through ingest (identify, with ``traits(i)`` and ``context(i)``)."""
    now = utcnow()
    raws = [
        {
            "type": "identify",
            "userId": f"c{i}",
            "messageId": f"c{i}-identify",
            "traits": traits(i) if traits else {},
            "context": context(i) if context else {},
        }
        for i in range(n)
    ]
    ingest(
        engine,
        SourceKey(brand.workspace_id, brand.source_id),
        [parse_message(r, received_at=now) for r in raws],
    )
    resolve_pending(engine)
    with engine.connect() as conn:
        return [find_by_identity(conn, brand.workspace_id, "user_id", f"c{i}") for i in range(n)]


def advisors(engine: sa.Engine, brand: Brand, *specs: dict[str, Any]) -> list[int]:
    with engine.begin() as conn:
        return [service.create_advisor(conn, brand.workspace_id, **spec).id for spec in specs]


def advisor_of(engine: sa.Engine, brand: Brand, pid: int) -> int | None:
    with connect(engine) as conn:
        current = assignment.current_assignment(conn, brand.workspace_id, pid)
    return current.advisor_id if current else None


def assign_all(engine: sa.Engine, brand: Brand, pids: list[int]) -> None:
    for pid in pids:
        with engine.begin() as conn:
            assignment.assign_by_rules(conn, brand.workspace_id, pid, now=utcnow())


def test_round_robin_spreads_customers_evenly_and_skips_full_advisors(
    engine: sa.Engine, brand: Brand
) -> None:
    a, b, c = advisors(
        engine, brand, {"name": "A", "wecom_userid": "a"}, {"name": "B", "wecom_userid": "b"},
        {"name": "C", "wecom_userid": "c"},
    )  # fmt: skip
    pids = people(engine, brand, 30)
    assign_all(engine, brand, pids)
    assert Counter(advisor_of(engine, brand, p) for p in pids) == {a: 10, b: 10, c: 10}
    assert [advisor_of(engine, brand, p) for p in pids[:6]] == [a, b, c, a, b, c]  # taking turns
    assert len(emitted(engine, brand, "Advisor Assigned")) == 30

    # An advisor at capacity is skipped; assigning an assigned customer by the rules changes nothing.
    with engine.begin() as conn:
        service.update_advisor(conn, brand.workspace_id, a, capacity=10)
    more = people(engine, brand, 34)[30:]
    assign_all(engine, brand, more)
    assert {advisor_of(engine, brand, p) for p in more} == {b, c}
    assign_all(engine, brand, pids)
    assert len(emitted(engine, brand, "Advisor Assigned")) == 34


def test_concurrent_assignments_stay_even(engine: sa.Engine, brand: Brand) -> None:
    ids = advisors(engine, brand, *({"name": n, "wecom_userid": n} for n in ("a", "b", "c")))
    pids = people(engine, brand, 30)
    start = threading.Barrier(6)
    errors: list[BaseException] = []

    def work(mine: list[int]) -> None:
        try:
            start.wait()
            for pid in mine:
                transaction(
                    engine,
                    lambda conn, pid=pid: assignment.assign_by_rules(
                        conn, brand.workspace_id, pid, now=utcnow()
                    ),
                )
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(pids[i::6],)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert Counter(advisor_of(engine, brand, p) for p in pids) == dict.fromkeys(ids, 10)


def test_by_store_then_channel_then_round_robin(engine: sa.Engine, brand: Brand) -> None:
    taipei1, taipei2, kaohsiung, line_only = advisors(
        engine, brand,
        {"name": "T1", "wecom_userid": "t1", "store": "taipei-101"},
        {"name": "T2", "wecom_userid": "t2", "store": "taipei-101"},
        {"name": "K", "wecom_userid": "k", "store": "kaohsiung"},
        {"name": "L", "wecom_userid": "l", "channels": ["line"]},
    )  # fmt: skip
    with engine.begin() as conn:
        service.put_assignment_rule(
            conn, brand.workspace_id, "by-store", method="store", config={"trait": "shop"}
        )
        service.put_assignment_rule(conn, brand.workspace_id, "by-channel", method="channel")
        service.put_assignment_rule(
            conn,
            brand.workspace_id,
            "the-rest",
            method="round_robin",
            config={"advisors": [taipei1, kaohsiung]},
        )
    shops = ["taipei-101", "taipei-101", "kaohsiung", "taipei-101", None, None]
    pids = people(
        engine, brand, 6,
        traits=lambda i: {"shop": shops[i]} if shops[i] else {},
        context=lambda i: {"channel": "line"} if i == 4 else {"channel": "browser"},
    )  # fmt: skip
    assign_all(engine, brand, pids)
    got = [advisor_of(engine, brand, p) for p in pids]
    assert got[:4] == [taipei1, taipei2, kaohsiung, taipei1]
    assert got[4] == line_only  # arrived on LINE: the LINE advisor
    assert got[5] in (taipei1, kaohsiung)  # neither: round-robin over the rule's advisors
    methods = [e["method"] for e in emitted(engine, brand, "Advisor Assigned")]
    assert methods == ["store"] * 4 + ["channel", "round_robin"]
    with engine.connect() as conn:
        assert assignment.arrival_channel(conn, brand.workspace_id, pids[0]) == "web"


CORP, TOKEN = "ww5823bf96d3bd56c7", "callback-token"
AES_KEY = WeComCallbackSender.new_key()


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("LIFELOOP_SECRET_KEY", TEST_SECRET_KEY)
    wecom.TOKENS._tokens.clear()
    with FakeWeCom(corp_id=CORP, secret="contact-secret") as server:
        yield server


def test_a_customer_who_adds_an_advisor_on_wecom_is_theirs(
    client: TestClient, engine: sa.Engine, brand: Brand, fake: FakeWeCom
) -> None:
    with engine.begin() as conn:
        save_config(
            conn, brand.workspace_id, channel="wecom",
            credentials={
                "corp_id": CORP, "secret": "contact-secret", "token": TOKEN, "encoding_aes_key": AES_KEY
            },
            settings={"base_url": fake.url},
        )  # fmt: skip
        service.put_assignment_rule(conn, brand.workspace_id, "contact", method="wecom_contact")
        service.put_assignment_rule(conn, brand.workspace_id, "others", method="round_robin")
    first, wangwu = advisors(
        engine, brand, {"name": "A", "wecom_userid": "a"}, {"name": "王五", "wecom_userid": "wangwu"}
    )
    sender = WeComCallbackSender(TOKEN, AES_KEY, CORP)
    for external in ("wmEXT1", "wmEXT2"):
        code = fake.add_contact(external, advisor="wangwu")
        body, params = sender.envelope(add_contact_xml(CORP, "wangwu", external, code, state="store-taipei"))
        assert client.post(f"/webhooks/wecom/acme?{urlencode(params)}", content=body).status_code == 200
    resolve_pending(engine)
    with engine.connect() as conn:
        pids = [
            find_by_identity(conn, brand.workspace_id, "wecom_external_userid", e)
            for e in ("wmEXT1", "wmEXT2")
        ]
    assert [advisor_of(engine, brand, p) for p in pids] == [wangwu, wangwu]  # not round-robin's turn
    (event, _) = emitted(engine, brand, "Advisor Assigned")
    assert (
        event["wecom_userid"] == "wangwu"
        and event["method"] == "wecom_contact"
        and event["rule"] == "contact"
    )
    # A task made later asks the rules again and keeps the contact's advisor.
    with engine.begin() as conn:
        task = tasks.create_task(
            conn, brand.workspace_id, pids[0], key="j:1", title="回访", source="journey:x", now=utcnow()
        )
    assert task.advisor_id == wangwu and first != wangwu


def test_manual_reassignment_moves_open_tasks_and_deactivation_hands_over(
    engine: sa.Engine, brand: Brand
) -> None:
    a, b, c = advisors(engine, brand, *({"name": n.upper(), "wecom_userid": n} for n in ("a", "b", "c")))
    (pid,) = people(engine, brand, 1)
    now = utcnow()
    with engine.begin() as conn:
        task = tasks.create_task(
            conn, brand.workspace_id, pid, key="j:vip:1", title="VIP 跟进", source="journey:vip", now=now
        )
    assert task.advisor_id == a

    before = snapshot(engine)
    with pytest.raises(InvalidInput, match="reason"), engine.begin() as conn:
        assignment.assign(conn, brand.workspace_id, pid, advisor_id=b, now=now)
    with pytest.raises(NotFound), engine.begin() as conn:
        assignment.assign(conn, brand.workspace_id, pid, advisor_id=999, reason="x", now=now)
    assert snapshot(engine) == before

    with engine.begin() as conn:
        moved = assignment.assign(
            conn, brand.workspace_id, pid, advisor_id=b, reason="客户要求换顾问", key="m1", now=now
        )
        again = assignment.assign(
            conn, brand.workspace_id, pid, advisor_id=b, reason="客户要求换顾问", key="m1", now=now
        )
    assert moved == again and (moved.advisor_id, moved.method, moved.reason) == (
        b,
        "manual",
        "客户要求换顾问",
    )
    with engine.connect() as conn:
        assert tasks.get_task(conn, brand.workspace_id, task.id).advisor_id == b
        assert [n["touser"] for n in notify.notifications_of(conn, brand.workspace_id, task.id)] == ["a", "b"]
    events = emitted(engine, brand, "Advisor Assigned")
    assert [(e["advisor_id"], e["method"], e["previous_advisor_id"]) for e in events] == [
        (a, "round_robin", None),
        (b, "manual", a),
    ]

    with engine.begin() as conn:
        handed = assignment.set_active(conn, brand.workspace_id, b, active=False, now=now)
    assert handed == {"reassigned": 1, "unassigned": 0}
    assert advisor_of(engine, brand, pid) in (a, c)
    with engine.connect() as conn:
        assert tasks.get_task(conn, brand.workspace_id, task.id).advisor_id == advisor_of(engine, brand, pid)
    # Nobody left: the customer is unassigned, recorded as such, and their open task waits for someone.
    with engine.begin() as conn:
        for other in (a, c):
            assignment.set_active(conn, brand.workspace_id, other, active=False, now=now)
    assert advisor_of(engine, brand, pid) is None
    assert emitted(engine, brand, "Advisor Unassigned")[-1]["reason"].endswith("deactivated")
    with engine.connect() as conn:
        assert tasks.get_task(conn, brand.workspace_id, task.id).advisor_id is None
        rows = (
            conn.execute(
                sa.select(advisor_assignments.c.method).where(
                    advisor_assignments.c.workspace_id == brand.workspace_id
                )
            )
            .scalars()
            .all()
        )
    assert rows == ["unassigned"]
    # An advisor back: the waiting task finds them when the customer is assigned again.
    with engine.begin() as conn:
        assignment.set_active(conn, brand.workspace_id, c, active=True, now=now)
        assignment.assign(conn, brand.workspace_id, pid, now=now)
        assert tasks.get_task(conn, brand.workspace_id, task.id).advisor_id == c


def test_create_task_with_the_same_key_is_the_same_task(engine: sa.Engine, brand: Brand) -> None:
    (advisor,) = advisors(engine, brand, {"name": "A", "wecom_userid": "a"})
    (pid,) = people(engine, brand, 1)
    now = utcnow()
    due = now + timedelta(hours=48)
    with engine.begin() as conn:
        first = tasks.create_task(
            conn, brand.workspace_id, pid, key="journey:vip:run7:step3", title="VIP 跟进", due_at=due,
            source="journey:vip", now=now, note="介绍新品优先体验",
        )  # fmt: skip
    with engine.begin() as conn:
        again = tasks.create_task(
            conn, brand.workspace_id, pid, key="journey:vip:run7:step3", title="VIP 跟进", due_at=due,
            source="journey:vip", now=now + timedelta(minutes=1),
        )  # fmt: skip
    assert again == first and first.advisor_id == advisor and first.description == "介绍新品优先体验"
    assert len(emitted(engine, brand, "Advisor Task Created")) == 1
    before = snapshot(engine)
    for bad in ({"key": ""}, {"title": " "}, {"kind": "Follow Up"}, {"due_at": due.replace(tzinfo=None)}):
        args: dict[str, Any] = {"key": "k2", "title": "t", "source": "journey:x", "now": now, **bad}
        with pytest.raises(InvalidInput), engine.begin() as conn:
            tasks.create_task(conn, brand.workspace_id, pid, **args)
    with pytest.raises(NotFound), engine.begin() as conn:
        tasks.create_task(conn, brand.workspace_id, 987654, key="k3", title="t", source="journey:x", now=now)
    assert snapshot(engine) == before
    # Overdue once its due time has passed, and in the advisor's overdue list.
    with engine.connect() as conn:
        later = now + timedelta(hours=49)
        assert [
            t.id
            for t in tasks.list_tasks(conn, brand.workspace_id, now=later, advisor_id=advisor, overdue=True)
        ] == [first.id]
        assert tasks.list_tasks(conn, brand.workspace_id, now=now, advisor_id=advisor, overdue=True) == []


def test_a_rule_keeps_one_open_task_per_customer(engine: sa.Engine, brand: Brand) -> None:
    from lifeloop.audience.service import add_manual_tag, remove_manual_tag

    advisors(engine, brand, {"name": "A", "wecom_userid": "a"})
    (pid,) = people(engine, brand, 1)
    with engine.begin() as conn:
        service.put_task_rule(
            conn,
            brand.workspace_id,
            "vip",
            event="Tag Added",
            where={"tag": "vip"},
            title="跟进 {{ customer.user_id }}",
        )

    def tag_cycle() -> None:
        with engine.begin() as conn:
            add_manual_tag(conn, brand.workspace_id, pid, "vip")
        with engine.begin() as conn:
            remove_manual_tag(conn, brand.workspace_id, pid, "vip")

    tag_cycle()
    tag_cycle()  # added again while the first task is open: no second task
    with engine.connect() as conn:
        (task,) = tasks.list_tasks(conn, brand.workspace_id, now=utcnow(), profile_id=pid)
    assert task.title == "跟进 c0"
    with engine.begin() as conn:
        tasks.update_task(conn, brand.workspace_id, task.id, status="in_progress", now=utcnow())
        tasks.update_task(conn, brand.workspace_id, task.id, status="done", outcome="no_answer", now=utcnow())
    tag_cycle()  # the first is done: a new one
    with engine.connect() as conn:
        assert len(tasks.list_tasks(conn, brand.workspace_id, now=utcnow(), profile_id=pid)) == 2
    assert len(emitted(engine, brand, "Advisor Task Created")) == 2


def test_concurrent_create_task_with_one_key_makes_one_task(engine: sa.Engine, brand: Brand) -> None:
    """A journey step retried in parallel (two workers on the same run step): one task, one event."""
    advisors(engine, brand, {"name": "A", "wecom_userid": "a"}, {"name": "B", "wecom_userid": "b"})
    (pid,) = people(engine, brand, 1)
    start = threading.Barrier(8)
    made: list[int] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            start.wait()
            task = transaction(
                engine,
                lambda conn: tasks.create_task(
                    conn, brand.workspace_id, pid, key="journey:j1:run1:s2", title="跟进",
                    source="journey:j1", now=utcnow(),
                ),
            )  # fmt: skip
            made.append(task.id)
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(made) == 8 and len(set(made)) == 1
    assert len(emitted(engine, brand, "Advisor Task Created")) == 1
    assert len(emitted(engine, brand, "Advisor Assigned")) == 1


def test_an_advisor_can_be_a_console_user_of_the_workspace(engine: sa.Engine, brand: Brand) -> None:
    from lifeloop.accounts.service import add_member, create_user

    with engine.begin() as conn:
        user = create_user(conn, email="lisi@example.com", password="a long enough password 1", name="李四")
        outsider = create_user(conn, email="x@example.com", password="a long enough password 2", name="X")
        add_member(conn, brand.workspace_id, user_id=user.id, role="operator")
        advisor = service.create_advisor(
            conn, brand.workspace_id, name="李四", wecom_userid="lisi", user_id=user.id
        )
    assert advisor.user_id == user.id
    with pytest.raises(InvalidInput, match="not a member"), engine.begin() as conn:
        service.create_advisor(conn, brand.workspace_id, name="X", wecom_userid="x", user_id=outsider.id)
    with engine.begin() as conn:  # a store clerk: no login
        clerk = service.create_advisor(
            conn, brand.workspace_id, name="店员", wecom_userid="clerk1", store="s1"
        )
    assert clerk.user_id is None


def test_a_merged_customer_keeps_the_advisor_of_the_profile_merged_into_theirs(
    engine: sa.Engine, brand: Brand
) -> None:
    """Seed 001: the customer adds an advisor on WeCom first (a profile known by the external userid),
    shops as a member later (another profile), and an identify links the two."""
    a, b = advisors(engine, brand, {"name": "A", "wecom_userid": "a"}, {"name": "B", "wecom_userid": "b"})
    now = utcnow()
    key = SourceKey(brand.workspace_id, brand.source_id)
    wecom_contact = {"type": "wecom_external_userid", "id": "wmEXT9", "collection": "users"}
    ingest(engine, key, [
        parse_message({"type": "track", "event": "Channel Followed", "anonymousId": "wecom:wmEXT9",
                       "messageId": "f1", "context": {"externalIds": [wecom_contact]}}, received_at=now),
        parse_message({"type": "identify", "userId": "u9", "messageId": "i1"}, received_at=now),
    ])  # fmt: skip
    resolve_pending(engine)
    with connect(engine) as conn:
        contact = find_by_identity(conn, brand.workspace_id, "wecom_external_userid", "wmEXT9")
        member = find_by_identity(conn, brand.workspace_id, "user_id", "u9")
    assert contact != member
    with engine.begin() as conn:
        assignment.assign(conn, brand.workspace_id, contact, advisor_id=b, reason="加了 B 的企微", now=now)
    ingest(engine, key, [parse_message(
        {"type": "identify", "userId": "u9", "messageId": "i2", "context": {"externalIds": [wecom_contact]}},
        received_at=now,
    )])  # fmt: skip
    resolve_pending(engine)
    with connect(engine) as conn:
        survivor = find_by_identity(conn, brand.workspace_id, "user_id", "u9")
        assert find_by_identity(conn, brand.workspace_id, "wecom_external_userid", "wmEXT9") == survivor
    assert survivor == member  # the assignment is the absorbed profile's
    with engine.begin() as conn:
        task = tasks.create_task(
            conn, brand.workspace_id, survivor, key="j:9", title="VIP", source="journey:v", now=now
        )
    assert task.advisor_id == b and a != b  # not round-robin's first turn
    with connect(engine) as conn:
        assert [t.id for t in tasks.list_tasks(conn, brand.workspace_id, now=now, profile_id=contact)] == [
            task.id
        ]
