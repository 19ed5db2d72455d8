"""Broadcasts end to end on SQLite and PostgreSQL against the LINE imitation: a segment of 2,000 friends
goes out as multicasts of at most 500 ids with identical content; the contact policy suppresses or
defers users with their reason; bad input is refused with a reason and changes nothing."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from lifeloop.audience.batch import after_definition_change
from lifeloop.audience.definitions import create_segment
from lifeloop.broadcasts import service
from lifeloop.broadcasts.definition import parse_definition
from lifeloop.broadcasts.sender import send_all
from lifeloop.broadcasts.stats import broadcast_stats
from lifeloop.errors import Conflict, InvalidInput
from lifeloop.messaging.service import set_consent
from lifeloop.messaging.templates.service import create_template
from lifeloop.store.engine import connect
from tests.conftest import Brand
from tests.fakes.line import FakeLine
from tests.messaging.outbox.test_multicast import NOON_TAIPEI, connect_line, deliver, friend, friends
from tests.messaging.outbox.test_multicast import line_api as line_api
from tests.messaging.outbox.test_multicast import secret_key as secret_key  # autouse


def sale_template(engine: sa.Engine, brand: Brand, key: str = "sale", text: str = "年終特賣 開始了") -> None:
    with engine.begin() as conn:
        create_template(
            conn,
            brand.workspace_id,
            key=key,
            channel="line",
            variants={"zh-TW": {"text": text}, "en": {"text": "Year-end sale starts now"}},
            default_locale="zh-TW",
        )


def everyone_segment(engine: sa.Engine, brand: Brand) -> None:
    with engine.begin() as conn:
        _row, definition = create_segment(
            conn, brand.workspace_id, "friends", "Friends", 'trait.line_user_id != ""'
        )
    after_definition_change(engine, brand.workspace_id, definition)


def broadcast(engine: sa.Engine, brand: Brand, definition: dict, key: str = "yearend") -> service.Broadcast:
    with engine.begin() as conn:
        service.create_broadcast(conn, brand.workspace_id, key=key, name="Year-end", definition=definition)
        return service.schedule_broadcast(conn, brand.workspace_id, key, now=NOON_TAIPEI)


def test_a_segment_of_2000_friends_goes_out_as_multicasts_of_at_most_500(
    engine: sa.Engine, brand: Brand, line_api: FakeLine
) -> None:
    connect_line(engine, brand, line_api)
    friends(engine, brand, 2000)
    sale_template(engine, brand)
    everyone_segment(engine, brand)
    definition = {"audience": {"segment": "friends"}, "channels": [{"channel": "line", "template": "sale"}]}
    with connect(engine) as conn:
        estimate = service.estimate(conn, brand.workspace_id, parse_definition(definition), now=NOON_TAIPEI)
    assert estimate["members"] == 2000 and estimate["reachable"] == {"line": 2000}
    assert estimate["expected"]["sent"] == 2000

    broadcast(engine, brand, definition)
    assert send_all(engine, now=NOON_TAIPEI) == 2000  # every recipient queued once
    deliver(engine)

    multicasts = line_api.calls("/v2/bot/message/multicast")
    assert sorted(len(call.json["to"]) for call in multicasts) == [500, 500, 500, 500]
    assert {m["text"] for call in multicasts for m in call.json["messages"]} == {"年終特賣 開始了"}
    assert not line_api.calls("/v2/bot/message/push")
    received = Counter(user for user, _ in line_api.delivered)
    assert set(received) == {friend(i) for i in range(2000)} and set(received.values()) == {1}
    send_all(engine, now=NOON_TAIPEI + timedelta(minutes=1))  # every message settled: sent
    with connect(engine) as conn:
        stats = broadcast_stats(conn, brand.workspace_id, "yearend", now=NOON_TAIPEI)
    assert stats["status"] == "sent" and stats["audience"] == 2000 and stats["sent"] == 2000


def test_the_policy_suppresses_or_defers_users_with_their_reason(
    engine: sa.Engine, brand: Brand, line_api: FakeLine
) -> None:
    from tests.messaging.outbox.test_multicast import queue

    connect_line(engine, brand, line_api)
    pids = friends(engine, brand, 40)
    sale_template(engine, brand)
    everyone_segment(engine, brand)
    capped, unsubscribed, night_owls = pids[:5], pids[5:10], pids[10:15]
    for n in range(3):  # the regular tier's cap: 3 messages per 7 days
        queue(engine, brand, capped, f"earlier {n}", prefix=f"earlier{n}")
    deliver(engine, NOON_TAIPEI - timedelta(minutes=1))
    with engine.begin() as conn:
        for pid in unsubscribed:
            set_consent(conn, brand.workspace_id, pid, "line", status="unsubscribed")
        from lifeloop.profiles.models import profiles

        conn.execute(
            sa.update(profiles)
            .where(profiles.c.workspace_id == brand.workspace_id, profiles.c.id.in_(night_owls))
            .values(timezone="America/New_York")  # 23:00 there: quiet hours
        )
    definition = {"audience": {"segment": "friends"}, "channels": [{"channel": "line", "template": "sale"}]}
    with connect(engine) as conn:
        estimate = service.estimate(conn, brand.workspace_id, parse_definition(definition), now=NOON_TAIPEI)
    assert estimate["expected"]["suppressed"] == 10 and estimate["expected"]["deferred"] == 5
    broadcast(engine, brand, definition)
    send_all(engine, now=NOON_TAIPEI)
    deliver(engine)

    with connect(engine) as conn:
        stats = broadcast_stats(conn, brand.workspace_id, "yearend", now=NOON_TAIPEI)
    assert stats["sent"] == 25 and stats["suppressed"] == 10 and stats["deferred"] == 5
    assert stats["suppressed_by_reason"] == {
        "frequency cap for regular: 3 messages per 7 days reached": 5,
        "consent withdrawn on line": 5,
    }
    assert stats["deferred_by_reason"] == {"quiet hours 23:00-08:00 in America/New_York": 5}


def test_a_template_that_fails_for_some_users_skips_them_with_a_reason(
    engine: sa.Engine, brand: Brand, line_api: FakeLine
) -> None:
    connect_line(engine, brand, line_api)
    pids = friends(engine, brand, 30)
    sale_template(engine, brand, key="personal", text="{{ traits.nickname }}，年終特賣")
    from lifeloop.profiles.service import set_trait

    with engine.begin() as conn:
        set_trait(
            conn, brand.workspace_id, "nickname", {pid: f"n{pid}" for pid in pids[:20]}, now=NOON_TAIPEI
        )
    broadcast(
        engine,
        brand,
        {"audience": {"profile_ids": pids}, "channels": [{"channel": "line", "template": "personal"}]},
    )
    send_all(engine, now=NOON_TAIPEI)
    deliver(engine)
    with connect(engine) as conn:
        stats = broadcast_stats(conn, brand.workspace_id, "yearend", now=NOON_TAIPEI)
    assert stats["sent"] == 20 and stats["failed"] == 10
    ((reason, count),) = stats["failed_by_reason"].items()
    assert count == 10 and "did not render" in reason and "nickname" in reason
    assert len(line_api.delivered) == 20 and all("，年終特賣" in m["text"] for _, m in line_api.delivered)


def test_a_b_variants_with_a_holdout_and_conversions(
    engine: sa.Engine, brand: Brand, line_api: FakeLine
) -> None:
    connect_line(engine, brand, line_api)
    pids = friends(engine, brand, 400)
    sale_template(engine, brand, key="a", text="A")
    sale_template(engine, brand, key="b", text="B")
    definition = {
        "audience": {"profile_ids": pids},
        "variants": [
            {"key": "a", "channels": [{"channel": "line", "template": "a"}]},
            {"key": "b", "channels": [{"channel": "line", "template": "b"}]},
        ],
        "holdout": 20,
    }
    broadcast(engine, brand, definition)
    send_all(engine, now=NOON_TAIPEI)
    deliver(engine)
    with connect(engine) as conn:
        stats = broadcast_stats(conn, brand.workspace_id, "yearend", now=NOON_TAIPEI + timedelta(days=1))
    users = {k: v["users"] for k, v in stats["variants"].items()}
    assert sum(users.values()) == 400 and 50 < users["holdout"] < 110
    assert stats["sent"] == 400 - users["holdout"]
    texts = Counter(m["text"] for _, m in line_api.delivered)
    assert texts == {"A": users["a"], "B": users["b"]}
    assert set(stats["experiment"]["arms"]) == {"a", "b", "holdout"}
    assert "vs_holdout" in stats["experiment"]["arms"]["a"]


def test_bad_input_is_refused_with_a_reason_and_changes_nothing(
    engine: sa.Engine, brand: Brand, line_api: FakeLine
) -> None:
    pids = friends(engine, brand, 3)
    sale_template(engine, brand)
    message = [{"channel": "line", "template": "sale"}]
    with engine.begin() as conn:
        with pytest.raises(InvalidInput, match="no template 'nope'"):
            service.create_broadcast(
                conn,
                brand.workspace_id,
                key="x",
                name="x",
                definition={
                    "audience": {"profile_ids": pids},
                    "channels": [{"channel": "line", "template": "nope"}],
                },
            )
        with pytest.raises(InvalidInput, match="name who receives it"):
            service.create_broadcast(
                conn, brand.workspace_id, key="x", name="x", definition={"audience": {}, "channels": message}
            )
        service.create_broadcast(
            conn,
            brand.workspace_id,
            key="nocreds",
            name="x",
            definition={"audience": {"profile_ids": pids}, "channels": message},
        )
        with pytest.raises(InvalidInput, match="line channel has no credentials"):
            service.schedule_broadcast(conn, brand.workspace_id, "nocreds", now=NOON_TAIPEI)
    connect_line(engine, brand, line_api)
    with engine.begin() as conn:
        service.create_broadcast(
            conn,
            brand.workspace_id,
            key="empty",
            name="x",
            definition={"audience": {"tags": ["nobody-has-this"]}, "channels": message},
        )
        with pytest.raises(InvalidInput, match="the audience is empty"):
            service.schedule_broadcast(conn, brand.workspace_id, "empty", now=NOON_TAIPEI)
        past = {"mode": "at", "at": "2026-12-07T09:00:00"}  # Taipei time: 01:00Z, before noon
        service.create_broadcast(
            conn,
            brand.workspace_id,
            key="past",
            name="x",
            definition={"audience": {"profile_ids": pids}, "channels": message, "schedule": past},
        )
        with pytest.raises(InvalidInput, match="in the past"):
            service.schedule_broadcast(conn, brand.workspace_id, "past", now=NOON_TAIPEI)
        statuses = {b.key: b.status for b in service.list_broadcasts(conn, brand.workspace_id)}
    assert statuses == {"nocreds": "draft", "empty": "draft", "past": "draft"}
    assert send_all(engine, now=NOON_TAIPEI) == 0 and not line_api.delivered


def test_cancel_stops_what_has_not_gone_out(
    engine: sa.Engine, brand: Brand, line_api: FakeLine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lifeloop.broadcasts import sender

    connect_line(engine, brand, line_api)
    pids = friends(engine, brand, 300)
    sale_template(engine, brand)
    b = broadcast(
        engine,
        brand,
        {"audience": {"profile_ids": pids}, "channels": [{"channel": "line", "template": "sale"}]},
    )
    monkeypatch.setattr(sender, "CHUNK", 100)
    with engine.begin() as conn:
        sender.start_broadcast(conn, brand.workspace_id, b.id, now=NOON_TAIPEI)
        sender.queue_chunk(conn, brand.workspace_id, b.id, now=NOON_TAIPEI)
    with engine.begin() as conn:
        result = service.cancel_broadcast(conn, brand.workspace_id, "yearend", now=NOON_TAIPEI)
        with pytest.raises(Conflict):
            service.cancel_broadcast(conn, brand.workspace_id, "yearend", now=NOON_TAIPEI)
    assert result["status"] == "cancelled" and result["messages_stopped"] == 100
    assert send_all(engine, now=NOON_TAIPEI) == 0
    deliver(engine)
    assert not line_api.delivered
    with connect(engine) as conn:
        stats = broadcast_stats(conn, brand.workspace_id, "yearend", now=NOON_TAIPEI)
    assert stats["suppressed_by_reason"] == {"broadcast cancelled": 100} and stats["queued"] == 100


def test_best_hour_spreads_messages_over_the_window(
    engine: sa.Engine, brand: Brand, line_api: FakeLine
) -> None:
    from lifeloop.messaging.models import outbox

    connect_line(engine, brand, line_api)
    pids = friends(engine, brand, 2)
    sale_template(engine, brand)
    window = {"mode": "best_hour", "at": "2026-12-08T09:00:00", "until": "2026-12-08T21:00:00"}  # a Tuesday
    broadcast(
        engine,
        brand,
        {
            "audience": {"profile_ids": pids},
            "schedule": window,
            "channels": [{"channel": "line", "template": "sale"}],
        },
    )
    start = datetime(2026, 12, 8, 1, 0, tzinfo=UTC)  # 09:00 Taipei
    assert send_all(engine, now=start - timedelta(minutes=5)) == 0  # not due yet
    send_all(engine, now=start)
    with connect(engine) as conn:
        times = set(
            conn.execute(
                sa.select(outbox.c.next_attempt_at).where(outbox.c.workspace_id == brand.workspace_id)
            ).scalars()
        )
    # Without enough activity of their own, users get the seed's first weekday window: 12:00 local.
    assert times == {datetime(2026, 12, 8, 4, 0, tzinfo=UTC)}


def test_a_recipient_merged_into_another_recipient_gets_it_once(
    engine: sa.Engine, brand: Brand, line_api: FakeLine
) -> None:
    from lifeloop.broadcasts.sender import start_broadcast
    from lifeloop.events.messages import parse_message
    from lifeloop.events.service import ingest
    from lifeloop.messaging.models import outbox
    from lifeloop.profiles.resolver import resolve_pending
    from lifeloop.workspaces.models import SourceKey

    connect_line(engine, brand, line_api)
    pids = friends(engine, brand, 2)
    sale_template(engine, brand)
    definition = {
        "audience": {"user_ids": ["f0", "f1"]},
        "channels": [{"channel": "line", "template": "sale"}],
    }
    b = broadcast(engine, brand, definition)
    with engine.begin() as conn:
        assert start_broadcast(conn, brand.workspace_id, b.id, now=NOON_TAIPEI) == 2
    alias = {"type": "alias", "messageId": "al", "previousId": "f0", "userId": "f1"}
    ingest(
        engine,
        SourceKey(brand.workspace_id, brand.source_id),
        [parse_message(alias, received_at=NOON_TAIPEI)],
    )
    resolve_pending(engine)
    assert send_all(engine, now=NOON_TAIPEI) == 2
    with connect(engine) as conn:
        rows = conn.execute(
            sa.select(outbox.c.profile_id, outbox.c.status, outbox.c.last_error).where(
                outbox.c.workspace_id == brand.workspace_id
            )
        ).all()
    survivor = next(r.profile_id for r in rows if r.status == "queued")
    assert survivor in pids and sorted(r.status for r in rows) == ["dead", "queued"]
    assert next(r.last_error for r in rows if r.status == "dead") == (
        f"merged into profile {survivor}, which receives it already"
    )
