"""Quiet hours (23:00-08:00 in the user's time zone) defer to 08:00 local, across zones and DST switches."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from lifeloop.messaging.delivery_worker import Adapters, deliver_due
from lifeloop.messaging.models import outbox
from lifeloop.messaging.outbox import enqueue
from lifeloop.messaging.policy import Audience, ContactPolicy, decide
from lifeloop.store.engine import connect
from tests.conftest import Brand
from tests.fakes.webhook_server import FakeWebhookServer
from tests.messaging.helpers import SECRET, make_profile


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


NO_JITTER = ContactPolicy(quiet_hours_jitter_minutes=0)

CASES = [
    # zone, now (UTC), deferred until (UTC) or None to send now
    ("Asia/Taipei", "2026-06-10 15:30", "2026-06-11 00:00"),  # 23:30 → 08:00 next day
    ("Asia/Taipei", "2026-06-10 23:59", "2026-06-11 00:00"),  # 07:59 → 08:00 the same morning
    ("Asia/Taipei", "2026-06-11 00:00", None),  # 08:00 sharp
    ("Asia/Taipei", "2026-06-10 14:59", None),  # 22:59
    ("Asia/Tokyo", "2026-06-10 14:00", "2026-06-10 23:00"),  # 23:00 JST → 08:00 JST
    ("Asia/Tokyo", "2026-06-10 13:59", None),
    # Los Angeles springs forward on 2026-03-08 02:00: 23:30 PST → 08:00 PDT (UTC-7), not UTC-8.
    ("America/Los_Angeles", "2026-03-08 07:30", "2026-03-08 15:00"),
    ("America/Los_Angeles", "2026-03-08 10:30", "2026-03-08 15:00"),  # 03:30 PDT, just after the gap
    # … and falls back on 2026-11-01 02:00: 23:30 PDT → 08:00 PST (UTC-8).
    ("America/Los_Angeles", "2026-11-01 06:30", "2026-11-01 16:00"),
    ("America/Los_Angeles", "2026-11-01 09:30", "2026-11-01 16:00"),  # 01:30 PST, the repeated hour
    ("America/Los_Angeles", "2026-11-01 16:00", None),
    # London: BST starts 2026-03-29 (23:30 GMT → 08:00 BST = 07:00 UTC), ends 2026-10-25.
    ("Europe/London", "2026-03-28 23:30", "2026-03-29 07:00"),
    ("Europe/London", "2026-10-24 22:30", "2026-10-25 08:00"),
    ("Europe/London", "2026-07-01 06:59", "2026-07-01 07:00"),
    ("Europe/London", "2026-07-01 07:00", None),
]


@pytest.mark.parametrize(("tz", "now", "until"), CASES)
def test_quiet_hours_defer_to_eight_local(tz: str, now: str, until: str | None) -> None:
    decision = decide(
        NO_JITTER,
        channel="webhook",
        recipient="http://x/",
        transactional=False,
        optimize_send_time=False,
        audience=Audience(timezone=ZoneInfo(tz)),
        now=utc(now),
        jitter_key="k",
    )
    if until is None:
        assert decision.action == "send"
    else:
        assert decision.action == "defer" and decision.until == utc(until)
        assert decision.until.astimezone(ZoneInfo(tz)).time() == time(8, 0)
        assert decision.reason == f"quiet hours 23:00-08:00 in {tz}"


def test_transactional_messages_are_not_held_by_quiet_hours() -> None:
    decision = decide(
        NO_JITTER,
        channel="webhook",
        recipient="http://x/",
        transactional=True,
        optimize_send_time=False,
        audience=Audience(timezone=ZoneInfo("Asia/Taipei")),
        now=utc("2026-06-10 18:00"),
        jitter_key="k",
    )
    assert decision.action == "send"


def test_jitter_spreads_deferred_messages_but_is_stable_per_message() -> None:
    policy = ContactPolicy()  # 10 minutes
    audience = Audience(timezone=ZoneInfo("Asia/Taipei"))
    eight = utc("2026-06-11 00:00")

    def until(key: str) -> datetime:
        d = decide(
            policy,
            channel="webhook",
            recipient="http://x/",
            transactional=False,
            optimize_send_time=False,
            audience=audience,
            now=utc("2026-06-10 16:00"),
            jitter_key=key,
        )
        assert d.until is not None
        return d.until

    times = [until(f"k{i}") for i in range(50)]
    assert all(eight <= t < eight + timedelta(minutes=10) for t in times)
    assert len(set(times)) > 10 and until("k7") == times[7]


def test_custom_quiet_hours_inside_one_day() -> None:
    policy = ContactPolicy(
        quiet_hours_start=time(0, 0), quiet_hours_end=time(7, 0), quiet_hours_jitter_minutes=0
    )
    audience = Audience(timezone=ZoneInfo("UTC"))
    kwargs = {"channel": "webhook", "recipient": "u", "transactional": False, "optimize_send_time": False}
    assert (
        decide(policy, audience=audience, now=utc("2026-06-10 23:30"), jitter_key="k", **kwargs).action
        == "send"
    )
    d = decide(policy, audience=audience, now=utc("2026-06-10 03:00"), jitter_key="k", **kwargs)
    assert d.until == utc("2026-06-10 07:00")


def test_a_deferred_message_is_sent_at_eight_local_and_never_dropped(engine: sa.Engine, brand: Brand) -> None:
    pid = make_profile(engine, brand, "night-owl", timezone="America/Los_Angeles")
    with FakeWebhookServer(SECRET) as server:
        with engine.begin() as conn:
            entry, _ = enqueue(
                conn,
                brand.workspace_id,
                channel="webhook",
                recipient=server.url,
                profile_id=pid,
                content={"text": "sale"},
                idempotency_key="sale-1",
            )
        adapters = Adapters(engine, webhook_secret=SECRET)
        night = utc("2099-03-08 07:30")  # 23:30 PST the evening before the DST switch
        assert deliver_due(engine, worker_id="w", adapters=adapters, clock=lambda: night) == 1
        with connect(engine) as conn:
            row = conn.execute(
                sa.select(outbox).where(outbox.c.workspace_id == brand.workspace_id, outbox.c.id == entry.id)
            ).one()
        assert (row.status, row.attempts) == ("deferred", 0)
        local = row.next_attempt_at.astimezone(ZoneInfo("America/Los_Angeles"))
        assert local.date().isoformat() == "2099-03-08" and time(8, 0) <= local.time() < time(8, 10)
        assert server.received == []
        assert deliver_due(engine, worker_id="w", adapters=adapters, clock=lambda: row.next_attempt_at) == 1
        adapters.close()
        assert list(server.accepted) == ["sale-1"]
