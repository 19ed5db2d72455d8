"""Send-time optimisation: each user's most active hour from their events, else seed 004's best windows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from lifeloop.messaging.delivery_worker import Adapters, deliver_due
from lifeloop.messaging.models import outbox
from lifeloop.messaging.policy import Audience, ContactPolicy, decide, most_active_hour, next_best_time
from lifeloop.messaging.service import send_message, update_policy
from lifeloop.store.engine import connect
from tests.conftest import Brand
from tests.fakes.webhook_server import FakeWebhookServer
from tests.messaging.helpers import SECRET, make_profile

TAIPEI = ZoneInfo("Asia/Taipei")


def local(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=TAIPEI)


def test_most_active_hour_counts_local_hours_and_needs_enough_events() -> None:
    base = local("2026-06-01 00:00")
    stamps = [base + timedelta(days=d, hours=20, minutes=5) for d in range(4)] + [base + timedelta(hours=9)]
    assert most_active_hour(stamps, TAIPEI, 5) == 20
    assert most_active_hour(stamps[:4], TAIPEI, 5) is None
    assert most_active_hour([s.astimezone(UTC) for s in stamps], ZoneInfo("Asia/Tokyo"), 5) == 21


@pytest.mark.parametrize(
    ("now", "active_hour", "expected"),
    [
        ("2026-06-10 09:00", None, "2026-06-10 12:00"),  # Wednesday: next weekday window
        ("2026-06-10 12:45", None, "2026-06-10 12:45"),  # inside 12:00-13:30: now
        ("2026-06-10 13:30", None, "2026-06-10 19:00"),
        ("2026-06-10 21:00", None, "2026-06-11 12:00"),
        ("2026-06-12 21:30", None, "2026-06-13 10:00"),  # Friday night → Saturday's first window
        ("2026-06-13 11:00", None, "2026-06-13 15:00"),  # Saturday
        ("2026-06-14 22:00", None, "2026-06-15 12:00"),  # Sunday night → Monday
        ("2026-06-10 09:00", 20, "2026-06-10 20:00"),  # the user's own hour
        ("2026-06-10 20:30", 20, "2026-06-10 20:30"),
        ("2026-06-10 21:00", 20, "2026-06-11 20:00"),
        ("2026-06-10 09:00", 2, "2026-06-10 12:00"),  # a night-time favourite is inside quiet hours: windows
    ],
)
def test_next_best_time(now: str, active_hour: int | None, expected: str) -> None:
    audience = Audience(timezone=TAIPEI, active_hour=active_hour)
    assert next_best_time(ContactPolicy(), local(now), audience) == local(expected)


def test_quiet_hours_with_optimisation_defer_to_the_best_time_not_to_eight() -> None:
    d = decide(
        ContactPolicy(),
        channel="webhook",
        recipient="u",
        transactional=False,
        optimize_send_time=True,
        audience=Audience(timezone=TAIPEI, active_hour=19),
        now=local("2026-06-10 23:30"),
        jitter_key="k",
    )
    assert (d.action, d.until, d.optimized) == ("defer", local("2026-06-11 19:00"), True)


def test_optimised_message_waits_for_the_users_hour(engine: sa.Engine, brand: Brand) -> None:
    today = datetime.now(UTC).replace(hour=12, minute=10, second=0, microsecond=0)  # 20:10 in Taipei
    history = [("Product Viewed", today - timedelta(days=d)) for d in range(1, 7)]
    pid = make_profile(engine, brand, "u1", timezone="Asia/Taipei", events=history)
    with FakeWebhookServer(SECRET) as server:
        with engine.begin() as conn:
            update_policy(conn, brand.workspace_id, {"send_time_optimization": True})
            entry, _ = send_message(
                conn,
                brand.workspace_id,
                channel="webhook",
                profile_id=pid,
                recipient=server.url,
                content={"text": "new arrivals"},
                idempotency_key="na",
            )
        assert entry.optimize_send_time
        adapters = Adapters(engine, webhook_secret=SECRET)
        morning = today.replace(hour=2, minute=0) + timedelta(days=1)  # 10:00 in Taipei, tomorrow
        deliver_due(engine, worker_id="w", adapters=adapters, clock=lambda: morning)
        with connect(engine) as conn:
            row = conn.execute(
                sa.select(outbox).where(outbox.c.workspace_id == brand.workspace_id, outbox.c.id == entry.id)
            ).one()
        assert row.status == "deferred" and row.next_attempt_at == today.replace(minute=0) + timedelta(days=1)
        assert not row.optimize_send_time and "most active hour 20:00" in row.last_error
        deliver_due(engine, worker_id="w", adapters=adapters, clock=lambda: row.next_attempt_at)
        adapters.close()
        assert list(server.accepted) == ["na"]
