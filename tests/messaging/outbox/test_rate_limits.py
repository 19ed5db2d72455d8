"""Provider rate limits: the per-channel token bucket paces sends; a 429 holds back the rest."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from lifeloop.messaging.delivery_worker import Adapters, deliver_due
from lifeloop.messaging.models import outbox
from lifeloop.messaging.outbox import RateLimiter, TokenBucket, enqueue
from lifeloop.messaging.service import update_policy
from lifeloop.store.engine import connect
from lifeloop.store.schema import utcnow
from tests.conftest import Brand
from tests.fakes.webhook_server import FakeWebhookServer, Reply
from tests.messaging.helpers import drain


def queue_many(engine: sa.Engine, brand: Brand, url: str, n: int) -> None:
    with engine.begin() as conn:
        for i in range(n):
            enqueue(
                conn,
                brand.workspace_id,
                channel="webhook",
                recipient=url,
                content={"text": str(i)},
                idempotency_key=f"k{i}",
                transactional=True,
            )


def test_token_bucket() -> None:
    bucket = TokenBucket(per_second=10, burst=2)
    now = bucket.updated
    assert [bucket.reserve(now), bucket.reserve(now)] == [0.0, 0.0]  # the burst
    assert abs(bucket.reserve(now) - 0.1) < 1e-9  # then one every 100 ms
    assert abs(bucket.reserve(now) - 0.2) < 1e-9
    assert bucket.reserve(now + 1.0) == 0.0  # refilled (up to the burst)
    bucket.paused_until = now + 5
    assert bucket.reserve(now + 1.0) == 4.0


def test_sends_are_paced_by_the_channel_rate_limit(
    engine: sa.Engine, brand: Brand, webhook: FakeWebhookServer, adapters: Adapters
) -> None:
    with engine.begin() as conn:
        update_policy(conn, brand.workspace_id, {"rate_limits": {"webhook": {"per_second": 20, "burst": 5}}})
    queue_many(engine, brand, webhook.url, 30)
    drain(engine, adapters)
    stamps = sorted(r.at for r in webhook.received)
    assert len(webhook.accepted) == 30
    # 5 at once, then 25 more at 20 per second: at least 1.25 s from first to last.
    assert stamps[-1] - stamps[0] >= 1.1  # the first request reaches the provider a moment after its slot
    # Never more than 5 + 20/s in any stretch. The stamps are arrival times at the imitation, so one
    # request held up on its way (a busy machine, 2 cores) shortens the stretch it starts: 0.1 s of slack.
    for i in range(len(stamps) - 10):
        assert stamps[i + 10] - stamps[i] >= (10 - 5) / 20 - 0.1


def test_the_sending_threads_wait_for_their_slots_side_by_side(
    engine: sa.Engine, brand: Brand, webhook: FakeWebhookServer, adapters: Adapters
) -> None:
    with engine.begin() as conn:
        update_policy(
            conn, brand.workspace_id, {"rate_limits": {"webhook": {"per_second": 100, "burst": 10}}}
        )
    queue_many(engine, brand, webhook.url, 110)
    deliver_due(engine, worker_id="w", adapters=adapters, limiter=RateLimiter(), concurrency=8)
    stamps = sorted(r.at for r in webhook.received)
    # 10 at once, 100 more at 100 a second: the last slot is 1 s after the first. Eight threads that each
    # slept their slot's offset from when they got to it would take about 6 s.
    assert len(webhook.accepted) == 110
    assert 0.9 <= stamps[-1] - stamps[0] < 2.0


def test_waits_longer_than_a_second_are_deferred_not_slept(
    engine: sa.Engine, brand: Brand, webhook: FakeWebhookServer, adapters: Adapters
) -> None:
    with engine.begin() as conn:
        update_policy(conn, brand.workspace_id, {"rate_limits": {"webhook": {"per_second": 1, "burst": 1}}})
    queue_many(engine, brand, webhook.url, 4)
    deliver_due(engine, worker_id="w", adapters=adapters, limiter=RateLimiter())
    with connect(engine) as conn:
        rows = conn.execute(
            sa.select(outbox.c.status, outbox.c.attempts, outbox.c.last_error)
            .where(outbox.c.workspace_id == brand.workspace_id)
            .order_by(outbox.c.id)
        ).all()
    # one now, one after a 1 s wait; the other two would wait 2 and 3 s: deferred, not counted as attempts
    assert [r.status for r in rows] == ["delivered", "delivered", "deferred", "deferred"]
    assert [r.attempts for r in rows[2:]] == [0, 0] and rows[3].last_error == "rate limit of webhook"


def test_a_429_holds_back_the_rest_of_the_batch(
    engine: sa.Engine, brand: Brand, webhook: FakeWebhookServer, adapters: Adapters
) -> None:
    webhook.then(Reply(429, {}, {"Retry-After": "60"}))
    queue_many(engine, brand, webhook.url, 5)
    start = utcnow()
    deliver_due(engine, worker_id="w", adapters=adapters, concurrency=1)
    assert len(webhook.received) == 1  # the other four never reached the provider
    with connect(engine) as conn:
        rows = conn.execute(
            sa.select(outbox.c.status, outbox.c.next_attempt_at).where(
                outbox.c.workspace_id == brand.workspace_id
            )
        ).all()
    assert {r.status for r in rows} == {"failed"}
    assert all(r.next_attempt_at >= start + timedelta(seconds=59) for r in rows)
