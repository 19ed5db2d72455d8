"""Frequency caps per value tier (seed 004 defaults), consent per channel, channel fallback and the
low-cost channels for lost customers — as decisions, and end to end through the delivery worker."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from lifeloop.events.models import events
from lifeloop.messaging.channels.webhook import WebhookAdapter
from lifeloop.messaging.delivery_worker import Adapters
from lifeloop.messaging.models import outbox
from lifeloop.messaging.outbox import enqueue
from lifeloop.messaging.policy import Audience, ContactPolicy, decide, tier_of
from lifeloop.messaging.service import set_consent, update_policy
from lifeloop.profiles.resolver import resolve_pending
from lifeloop.store.engine import connect
from tests.conftest import Brand
from tests.fakes.webhook_server import FakeWebhookServer
from tests.messaging.helpers import SECRET, drain, make_profile

NOON = datetime(2026, 6, 10, 4, 0, tzinfo=UTC)  # 12:00 in Taipei, a Wednesday
LATER_NOON = datetime(2099, 6, 10, 4, 0, tzinfo=UTC)  # after anything the tests queue "now"


@pytest.mark.parametrize(
    ("value_tier", "tier", "limit", "days"),
    [
        (None, "regular", 3, 7),
        ("normal", "regular", 3, 7),
        ("regular", "regular", 3, 7),
        ("VIP", "high_value", 5, 7),
        ("high_value", "high_value", 5, 7),
        ("dormant", "sleeping", 2, 30),
        ("sleeping", "sleeping", 2, 30),
        ("lost", "lost", 2, 30),
        ("potential", "potential", 3, 7),  # no cap of its own: the regular one
    ],
)
def test_caps_per_tier(value_tier: str | None, tier: str, limit: int, days: int) -> None:
    assert tier_of({"value_tier": value_tier} if value_tier else {}) == tier
    policy = ContactPolicy(low_cost_channels={})

    def verdict(sent_days_ago: list[float], transactional: bool = False) -> str:
        sends = [NOON - timedelta(days=d) for d in sent_days_ago]
        audience = Audience(tier=tier, recent_sends=sends, timezone=ZoneInfo("Asia/Taipei"))
        return decide(
            policy,
            channel="webhook",
            recipient="u",
            transactional=transactional,
            optimize_send_time=False,
            audience=audience,
            now=NOON,
            jitter_key="k",
        ).action

    inside = [i * (days - 1) / limit for i in range(limit)]
    assert verdict(inside[:-1]) == "send"
    assert verdict(inside) == "suppress"
    assert verdict([*inside[:-1], days + 0.5]) == "send"  # the oldest send has left the window
    assert verdict(inside, transactional=True) == "send"  # transactional messages are exempt


def test_over_cap_can_defer_until_a_slot_frees() -> None:
    policy = ContactPolicy(over_cap="defer")
    sent = [NOON - timedelta(days=6), NOON - timedelta(days=2), NOON - timedelta(days=1)]
    d = decide(
        policy,
        channel="webhook",
        recipient="u",
        transactional=False,
        optimize_send_time=False,
        audience=Audience(recent_sends=sent, timezone=ZoneInfo("Asia/Taipei")),
        now=NOON,
        jitter_key="k",
    )
    assert d.action == "defer" and d.until == NOON + timedelta(days=1)


CONSENT_CASES = [
    # channel, consents, addresses, tier, expected action, fallback channel
    ("line", {}, {"line": "U1", "sms": "+886900"}, "regular", "send", None),
    ("line", {"line": "unsubscribed"}, {"line": "U1", "sms": "+886900"}, "regular", "fallback", "sms"),
    (
        "line",
        {"line": "unsubscribed", "sms": "unsubscribed"},
        {"line": "U1", "sms": "+886900"},
        "regular",
        "suppress",
        None,
    ),
    (
        "line",
        {"line": "unsubscribed"},
        {"line": "U1"},
        "regular",
        "suppress",
        None,
    ),  # no phone to fall back to
    ("line", {}, {"sms": "+886900"}, "regular", "fallback", "sms"),  # no LINE id at all
    ("email", {"email": "unsubscribed"}, {"email": "a@b.c", "sms": "+886900"}, "regular", "suppress", None),
    ("line", {"line": "subscribed"}, {"line": "U1"}, "regular", "send", None),
    ("line", {}, {"line": "U1", "sms": "+886900"}, "lost", "fallback", "sms"),  # lost: low-cost channels only
    ("sms", {}, {"sms": "+886900"}, "lost", "send", None),
    ("line", {}, {"line": "U1"}, "lost", "suppress", None),
]


@pytest.mark.parametrize(("channel", "consents", "addresses", "tier", "action", "fallback"), CONSENT_CASES)
def test_consent_and_fallback(
    channel: str, consents: dict, addresses: dict, tier: str, action: str, fallback: str | None
) -> None:
    audience = Audience(tier=tier, consents=consents, addresses=addresses, timezone=ZoneInfo("Asia/Taipei"))
    d = decide(
        ContactPolicy(),
        channel=channel,
        recipient=addresses.get(channel),
        transactional=False,
        optimize_send_time=False,
        audience=audience,
        now=NOON,
        jitter_key="k",
    )
    assert (d.action, d.channel) == (action, fallback)
    if fallback:
        assert d.recipient == addresses[fallback]


@pytest.fixture
def server() -> Iterator[FakeWebhookServer]:
    with FakeWebhookServer(SECRET) as s:
        yield s


def statuses(engine: sa.Engine, brand: Brand) -> list[tuple[str, str, str | None]]:
    with connect(engine) as conn:
        rows = conn.execute(
            sa.select(outbox.c.idempotency_key, outbox.c.status, outbox.c.last_error)
            .where(outbox.c.workspace_id == brand.workspace_id)
            .order_by(outbox.c.id)
        )
        return [tuple(r) for r in rows]  # type: ignore[misc]


def send(engine: sa.Engine, brand: Brand, pid: int, url: str, key: str, **kwargs: object) -> None:
    with engine.begin() as conn:
        enqueue(
            conn,
            brand.workspace_id,
            channel="webhook",
            recipient=url,
            profile_id=pid,
            content={"text": key},
            idempotency_key=key,
            **kwargs,
        )  # type: ignore[arg-type]


@pytest.mark.parametrize(("value_tier", "limit"), [("vip", 5), (None, 3), ("dormant", 2)])
def test_caps_hold_end_to_end(
    engine: sa.Engine, brand: Brand, server: FakeWebhookServer, value_tier: str | None, limit: int
) -> None:
    traits = {"value_tier": value_tier} if value_tier else {}
    pid = make_profile(engine, brand, "u1", traits=traits, timezone="Asia/Taipei")
    for i in range(7):
        send(engine, brand, pid, server.url, f"promo-{i}")
    send(engine, brand, pid, server.url, "receipt", transactional=True)
    adapters = Adapters(engine, webhook_secret=SECRET)
    drain(engine, adapters, clock=lambda: LATER_NOON)
    # A later pass (a second batch) sees the delivered ones and still refuses.
    send(engine, brand, pid, server.url, "promo-late")
    drain(engine, adapters, clock=lambda: LATER_NOON + timedelta(hours=1))
    adapters.close()
    rows = statuses(engine, brand)
    assert Counter(s for _, s, _ in rows) == Counter({"delivered": limit + 1, "suppressed": 8 - limit})
    assert sorted(server.accepted) == sorted([f"promo-{i}" for i in range(limit)] + ["receipt"])
    assert all(e.startswith("frequency cap for") for _, s, e in rows if s == "suppressed")


def test_consent_withdrawn_means_no_send(engine: sa.Engine, brand: Brand, server: FakeWebhookServer) -> None:
    pid = make_profile(engine, brand, "u1", timezone="Asia/Taipei")
    with engine.begin() as conn:
        set_consent(
            conn, brand.workspace_id, pid, "webhook", status="unsubscribed", source="unsubscribe_link"
        )
    send(engine, brand, pid, server.url, "promo")
    send(engine, brand, pid, server.url, "receipt", transactional=True)
    adapters = Adapters(engine, webhook_secret=SECRET)
    drain(engine, adapters, clock=lambda: LATER_NOON)
    assert server.received == []
    assert [(k, s) for k, s, _ in statuses(engine, brand)] == [
        ("promo", "suppressed"),
        ("receipt", "suppressed"),
    ]
    resolve_pending(engine)
    with connect(engine) as conn:
        names = conn.execute(
            sa.select(events.c.event).where(
                events.c.workspace_id == brand.workspace_id, events.c.profile_id == pid
            )
        ).scalars()
        assert Counter(names)["Message Suppressed"] == 2
    with engine.begin() as conn:  # subscribing again lets the next message through
        set_consent(conn, brand.workspace_id, pid, "webhook", status="subscribed", source="api")
    send(engine, brand, pid, server.url, "promo-2")
    drain(engine, adapters, clock=lambda: LATER_NOON)
    adapters.close()
    assert list(server.accepted) == ["promo-2"]


def test_blocked_line_falls_back_to_sms(engine: sa.Engine, brand: Brand) -> None:
    """LINE answers 'blocked' (410 from the stand-in), the policy's fallback sends the text by SMS."""
    with FakeWebhookServer(SECRET) as line, FakeWebhookServer(SECRET) as sms:
        from tests.fakes.webhook_server import Reply

        line.then(Reply(410, {"message": "user blocked the account"}))
        # Each channel's provider is a real HTTP endpoint; a signed-webhook adapter speaks to both.
        endpoints = {"line": line.url, "sms": sms.url}
        adapters = Adapters(
            engine, factory=lambda _ws, channel: WebhookAdapter(secret=SECRET, url=endpoints[channel])
        )
        pid = make_profile(
            engine,
            brand,
            "u1",
            timezone="Asia/Taipei",
            traits={"line_user_id": "U123", "phone": "+886 912 345 678"},
        )
        with engine.begin() as conn:
            update_policy(conn, brand.workspace_id, {"fallback": {"line": ["sms"]}})
            enqueue(
                conn,
                brand.workspace_id,
                channel="line",
                profile_id=pid,
                content={"text": "hello"},
                idempotency_key="hello-u1",
            )
        drain(engine, adapters, clock=lambda: LATER_NOON)
        adapters.close()
        assert list(sms.accepted) == ["hello-u1/sms"]
        assert sms.accepted["hello-u1/sms"]["recipient"] == "+886912345678"
        assert sms.accepted["hello-u1/sms"]["content"] == {"text": "hello"}
    rows = statuses(engine, brand)
    assert rows[0][:2] == ("hello-u1", "suppressed") and "sent on sms instead" in (rows[0][2] or "")
    assert rows[1][:2] == ("hello-u1/sms", "delivered")
