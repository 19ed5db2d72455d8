"""Identical LINE messages claimed together go out as multicasts of at most 500 user ids, one outbox row
per recipient; a multicast is recorded before it is made, so a retry repeats exactly that request with
the same retry key and LINE's de-duplication keeps everyone at one message."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from lifeloop.events.messages import parse_message
from lifeloop.events.service import ingest
from lifeloop.messaging.channels.config import save_config
from lifeloop.messaging.delivery_worker import Adapters
from lifeloop.messaging.models import outbox
from lifeloop.messaging.outbox import enqueue
from lifeloop.profiles.resolver import resolve_pending
from lifeloop.profiles.service import live_profile_ids
from lifeloop.store.engine import connect
from lifeloop.workspaces.models import SourceKey
from tests.conftest import TEST_SECRET_KEY, Brand
from tests.fakes.line import FakeLine
from tests.messaging.helpers import drain

# Inside the send window of every time zone the brand's profiles are in (no quiet hours).
NOON_TAIPEI = datetime(2026, 12, 7, 4, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def secret_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIFELOOP_SECRET_KEY", TEST_SECRET_KEY)


@pytest.fixture
def line_api() -> Iterator[FakeLine]:
    with FakeLine(token="tok") as server:
        yield server


def friend(i: int) -> str:
    return f"U{i:032x}"


def connect_line(engine: sa.Engine, brand: Brand, line_api: FakeLine, **settings: object) -> None:
    with engine.begin() as conn:
        save_config(
            conn,
            brand.workspace_id,
            channel="line",
            credentials={"channel_access_token": "tok", "channel_secret": "s" * 32},
            settings={"base_url": line_api.url, **settings},
        )


def friends(engine: sa.Engine, brand: Brand, count: int) -> list[int]:
    raws = [
        {"type": "identify", "userId": f"f{i}", "messageId": f"f{i}", "traits": {"line_user_id": friend(i)}}
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
        return live_profile_ids(conn, brand.workspace_id)


def queue(engine: sa.Engine, brand: Brand, pids: list[int], text: str, prefix: str = "sale") -> None:
    with engine.begin() as conn:
        for pid in pids:
            enqueue(
                conn,
                brand.workspace_id,
                channel="line",
                profile_id=pid,
                content={"text": text},
                idempotency_key=f"{prefix}:{pid}",
                now=NOON_TAIPEI - timedelta(minutes=1),
            )


def deliver(engine: sa.Engine, at: datetime = NOON_TAIPEI) -> int:
    adapters = Adapters(engine)
    try:
        return drain(engine, adapters, clock=lambda: at)
    finally:
        adapters.close()


def statuses(engine: sa.Engine, brand: Brand) -> Counter[str]:
    with connect(engine) as conn:
        rows = conn.execute(
            sa.select(outbox.c.status, sa.func.count())
            .where(outbox.c.workspace_id == brand.workspace_id)
            .group_by(outbox.c.status)
        )
        return Counter({status: count for status, count in rows})


def test_identical_messages_go_out_as_multicasts_of_at_most_500(
    engine: sa.Engine, brand: Brand, line_api: FakeLine
) -> None:
    connect_line(engine, brand, line_api)
    pids = friends(engine, brand, 1203)
    queue(engine, brand, pids[:1200], "双11 starts now")
    with engine.begin() as conn:  # personal content cannot share a request
        for n, pid in enumerate(pids[1200:]):
            enqueue(conn, brand.workspace_id, channel="line", profile_id=pid, content={"text": f"hi {n}"},
                    idempotency_key=f"personal:{pid}", now=NOON_TAIPEI - timedelta(minutes=1))  # fmt: skip

    deliver(engine)

    multicasts = line_api.calls("/v2/bot/message/multicast")
    pushes = line_api.calls("/v2/bot/message/push")
    assert multicasts and all(1 < len(call.json["to"]) <= 500 for call in multicasts)
    assert {m["text"] for call in multicasts for m in call.json["messages"]} == {"双11 starts now"}
    assert sorted(len(call.json["to"]) for call in multicasts) == [200, 500, 500]
    assert len(pushes) == 3
    received = Counter(user for user, _ in line_api.delivered)
    assert set(received) == {friend(i) for i in range(1203)} and set(received.values()) == {1}
    keys = [call.headers["x-line-retry-key"] for call in multicasts + pushes]
    assert len(set(keys)) == len(keys)
    assert statuses(engine, brand) == {"delivered": 1203}
    with connect(engine) as conn:  # each row knows its recipient and the request that carried it
        rows = conn.execute(
            sa.select(outbox.c.recipient, outbox.c.delivery_group).where(
                outbox.c.workspace_id == brand.workspace_id, outbox.c.idempotency_key.like("sale:%")
            )
        ).all()
    assert all(r.recipient and r.delivery_group for r in rows)
    assert len({r.delivery_group for r in rows}) == 3


def test_a_failed_multicast_is_repeated_exactly_under_its_retry_key(
    engine: sa.Engine, brand: Brand, line_api: FakeLine
) -> None:
    connect_line(engine, brand, line_api)
    pids = friends(engine, brand, 300)
    queue(engine, brand, pids, "member day")
    line_api.fail_next(500, {"message": "An error occurred in the internal server"})

    deliver(engine)
    assert statuses(engine, brand) == {"failed": 300}
    with connect(engine) as conn:  # the whole group retries at one moment
        retry_at = conn.execute(
            sa.select(sa.func.count(sa.distinct(outbox.c.next_attempt_at))).where(
                outbox.c.workspace_id == brand.workspace_id
            )
        ).scalar_one()
    assert retry_at == 1
    queue(engine, brand, [pids[0]], "a later, different message", prefix="later")

    deliver(engine, NOON_TAIPEI + timedelta(hours=1))

    first, second, *rest = line_api.calls("/v2/bot/message/multicast")
    assert not rest
    assert first.headers["x-line-retry-key"] == second.headers["x-line-retry-key"]
    assert sorted(first.json["to"]) == sorted(second.json["to"]) and len(second.json["to"]) == 300
    assert statuses(engine, brand) == {"delivered": 301}
    assert Counter(user for user, m in line_api.delivered if m["text"] == "member day") == {
        friend(i): 1 for i in range(300)
    }


def test_a_multicast_whose_answer_was_lost_is_not_sent_twice(
    engine: sa.Engine, brand: Brand, line_api: FakeLine
) -> None:
    """LINE accepted the multicast but the answer never came back (timeout): the retry carries the same
    retry key, LINE answers 409, and the messages count as delivered without a second copy."""
    connect_line(engine, brand, line_api, timeout=0.3)
    pids = friends(engine, brand, 120)
    queue(engine, brand, pids, "flash sale")
    line_api.answer_delay = 1.0

    deliver(engine)
    assert statuses(engine, brand) == {"failed": 120}
    line_api.answer_delay = 0.0
    deliver(engine, NOON_TAIPEI + timedelta(hours=1))

    assert statuses(engine, brand) == {"delivered": 120}
    assert len(line_api.calls("/v2/bot/message/multicast")) == 2
    assert Counter(user for user, _ in line_api.delivered) == {friend(i): 1 for i in range(120)}
