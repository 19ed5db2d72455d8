"""The outbox against a real local webhook receiver: idempotent enqueue, delivery, retries with backoff,
Retry-After, dead letters, leases taken over after a crash, and events flowing back."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from lifeloop.errors import Conflict, InvalidInput
from lifeloop.events.models import events
from lifeloop.messaging.delivery_worker import Adapters, deliver_due
from lifeloop.messaging.models import delivery_attempts, outbox
from lifeloop.messaging.outbox import claim_due, enqueue
from lifeloop.messaging.service import get_delivery, update_policy
from lifeloop.profiles.resolver import resolve_pending
from lifeloop.store.engine import connect
from lifeloop.store.schema import utcnow
from tests.conftest import Brand
from tests.fakes.webhook_server import FakeWebhookServer, Reply
from tests.messaging.helpers import drain, make_profile


def queue(engine: sa.Engine, brand: Brand, url: str, key: str, **kwargs: object) -> int:
    with engine.begin() as conn:
        entry, _ = enqueue(
            conn,
            brand.workspace_id,
            channel="webhook",
            recipient=url,
            content={"text": f"hi {key}"},
            idempotency_key=key,
            transactional=True,
            **kwargs,  # type: ignore[arg-type]
        )
    return entry.id


def row(engine: sa.Engine, brand: Brand, outbox_id: int) -> sa.Row:
    with connect(engine) as conn:
        return conn.execute(
            sa.select(outbox).where(outbox.c.workspace_id == brand.workspace_id, outbox.c.id == outbox_id)
        ).one()


def test_enqueue_is_idempotent_and_a_reused_key_for_another_message_conflicts(
    engine: sa.Engine, brand: Brand
) -> None:
    first = queue(engine, brand, "http://127.0.0.1:9/hook", "k1")
    assert queue(engine, brand, "http://127.0.0.1:9/hook", "k1") == first
    with pytest.raises(Conflict), engine.begin() as conn:
        enqueue(
            conn,
            brand.workspace_id,
            channel="webhook",
            recipient="http://127.0.0.1:9/other",
            content={"text": "hi k1"},
            idempotency_key="k1",
        )
    with connect(engine) as conn:
        count = conn.execute(
            sa.select(sa.func.count()).select_from(outbox).where(outbox.c.workspace_id == brand.workspace_id)
        ).scalar()
    assert count == 1


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"channel": "pigeon"}, "channel"),
        ({"idempotency_key": ""}, "idempotency_key"),
        ({"idempotency_key": "x" * 256}, "idempotency_key"),
        ({"content": {}}, "content"),
        ({"recipient": None}, "recipient"),
        ({"fallback_content": {"fax": {"text": "x"}}}, "fallback_content"),
    ],
)
def test_enqueue_refuses_bad_input(engine: sa.Engine, brand: Brand, kwargs: dict, field: str) -> None:
    args = {"channel": "webhook", "recipient": "http://x/", "content": {"text": "x"}, "idempotency_key": "k"}
    with pytest.raises(InvalidInput) as error, engine.begin() as conn:
        enqueue(conn, brand.workspace_id, **{**args, **kwargs})  # type: ignore[arg-type]
    assert error.value.field == field


def test_delivers_signed_requests_with_the_idempotency_key(
    engine: sa.Engine, brand: Brand, webhook: FakeWebhookServer, adapters: Adapters
) -> None:
    ids = [queue(engine, brand, webhook.url, f"k{i}") for i in range(5)]
    drain(engine, adapters)
    assert sorted(webhook.accepted) == [f"k{i}" for i in range(5)]
    assert all(r.status == 200 for r in webhook.received)  # every signature verified
    for i, outbox_id in enumerate(ids):
        r = row(engine, brand, outbox_id)
        assert (r.status, r.attempts, r.provider_message_id) == (
            "delivered",
            1,
            webhook.accepted[f"k{i}"]["_id"],
        )
        assert r.delivered_at is not None and r.claimed_by is None
    assert webhook.accepted["k0"]["content"] == {"text": "hi k0"}


def test_transient_errors_are_retried_with_backoff_then_delivered(
    engine: sa.Engine, brand: Brand, webhook: FakeWebhookServer, adapters: Adapters
) -> None:
    webhook.then(Reply(503), Reply(500), key="k")
    outbox_id = queue(engine, brand, webhook.url, "k")
    start = utcnow()
    clock = [start]
    assert deliver_due(engine, worker_id="w", adapters=adapters, clock=lambda: clock[0]) == 1
    first = row(engine, brand, outbox_id)
    assert first.status == "failed" and "HTTP 503" in first.last_error
    # base 2 s with jitter between half and all of it
    assert timedelta(seconds=1) <= first.next_attempt_at - start <= timedelta(seconds=2.5)
    assert deliver_due(engine, worker_id="w", adapters=adapters, clock=lambda: clock[0]) == 0  # not due yet
    clock[0] = first.next_attempt_at
    deliver_due(engine, worker_id="w", adapters=adapters, clock=lambda: clock[0])
    second = row(engine, brand, outbox_id)
    assert second.status == "failed" and second.attempts == 2
    assert timedelta(seconds=2) <= second.next_attempt_at - clock[0] <= timedelta(seconds=4.5)
    clock[0] = second.next_attempt_at
    deliver_due(engine, worker_id="w", adapters=adapters, clock=lambda: clock[0])
    assert row(engine, brand, outbox_id).status == "delivered"
    _entry, attempts = get_delivery(engine.connect(), brand.workspace_id, outbox_id)
    assert [a["status"] for a in attempts] == ["transient", "transient", "delivered"]


def test_429_retry_after_is_respected(
    engine: sa.Engine, brand: Brand, webhook: FakeWebhookServer, adapters: Adapters
) -> None:
    webhook.then(Reply(429, {"error": "slow down"}, {"Retry-After": "120"}), key="k")
    outbox_id = queue(engine, brand, webhook.url, "k")
    start = utcnow()
    deliver_due(engine, worker_id="w", adapters=adapters, clock=lambda: start)
    r = row(engine, brand, outbox_id)
    assert r.status == "failed" and r.next_attempt_at - start >= timedelta(seconds=120)
    assert webhook.accepted == {}


@pytest.mark.parametrize(
    ("reply", "reason"),
    [(Reply(400, {"error": "bad payload"}), "permanent: HTTP 400"), (Reply(410), "blocked: HTTP 410")],
)
def test_permanent_errors_go_to_the_dead_letters_with_the_reason(
    engine: sa.Engine, brand: Brand, webhook: FakeWebhookServer, adapters: Adapters, reply: Reply, reason: str
) -> None:
    webhook.then(reply, key="k")
    outbox_id = queue(engine, brand, webhook.url, "k")
    drain(engine, adapters)
    r = row(engine, brand, outbox_id)
    assert r.status == "dead" and r.last_error.startswith(reason)


def test_gives_up_after_max_attempts(
    engine: sa.Engine, brand: Brand, webhook: FakeWebhookServer, adapters: Adapters
) -> None:
    with engine.begin() as conn:
        update_policy(conn, brand.workspace_id, {"max_attempts": 3})
    webhook.then(*[Reply(502)] * 3, key="k")
    outbox_id = queue(engine, brand, webhook.url, "k")
    clock = [utcnow()]
    for _ in range(3):
        deliver_due(engine, worker_id="w", adapters=adapters, clock=lambda: clock[0])
        clock[0] += timedelta(hours=1)
    r = row(engine, brand, outbox_id)
    assert (r.status, r.attempts) == ("dead", 3)
    assert r.last_error.startswith("gave up after 3 attempts: HTTP 502")


def test_unreachable_provider_is_transient(engine: sa.Engine, brand: Brand, adapters: Adapters) -> None:
    outbox_id = queue(engine, brand, "http://127.0.0.1:9/closed", "k")  # nothing listens on port 9
    deliver_due(engine, worker_id="w", adapters=adapters)
    r = row(engine, brand, outbox_id)
    assert r.status == "failed" and "could not reach" in r.last_error


def test_an_expired_lease_is_taken_over_and_resent_with_the_same_key(
    engine: sa.Engine, brand: Brand, webhook: FakeWebhookServer, adapters: Adapters
) -> None:
    outbox_id = queue(engine, brand, webhook.url, "k")
    now = utcnow()
    # A worker claims it and dies without settling.
    assert [e.id for e in claim_due(engine, worker_id="dead", batch_size=10, lease_seconds=30, now=now)] == [
        outbox_id
    ]
    assert (
        deliver_due(engine, worker_id="w2", adapters=adapters, clock=lambda: now + timedelta(seconds=10)) == 0
    )
    assert (
        deliver_due(engine, worker_id="w2", adapters=adapters, clock=lambda: now + timedelta(seconds=31)) == 1
    )
    r = row(engine, brand, outbox_id)
    assert (r.status, r.attempts) == ("delivered", 2)
    assert webhook.acceptances_per_key() == {"k": 1}


def test_a_worker_that_lost_its_lease_cannot_overwrite_the_new_owner(
    engine: sa.Engine, brand: Brand, webhook: FakeWebhookServer, adapters: Adapters
) -> None:
    from lifeloop.messaging.outbox import Settlement, settle

    outbox_id = queue(engine, brand, webhook.url, "k")
    now = utcnow()
    (stale,) = claim_due(engine, worker_id="slow", batch_size=1, lease_seconds=1, now=now)
    (fresh,) = claim_due(
        engine, worker_id="fast", batch_size=1, lease_seconds=60, now=now + timedelta(seconds=2)
    )
    with engine.begin() as conn:
        assert settle(conn, "slow", Settlement(stale, "dead", "late"), now) is False
        assert settle(conn, "fast", Settlement(fresh, "delivered"), now) is True
    assert row(engine, brand, outbox_id).status == "delivered"


def test_delivery_outcomes_flow_back_as_idempotent_events(
    engine: sa.Engine, brand: Brand, webhook: FakeWebhookServer, adapters: Adapters
) -> None:
    pid = make_profile(engine, brand, "u1")
    with engine.begin() as conn:
        entry, _ = enqueue(
            conn,
            brand.workspace_id,
            channel="webhook",
            recipient=webhook.url,
            profile_id=pid,
            content={"text": "hi"},
            idempotency_key="welcome-u1",
            template="welcome",
            transactional=True,
        )
    drain(engine, adapters)
    resolve_pending(engine)
    with connect(engine) as conn:
        stored = conn.execute(
            sa.select(events.c.event, events.c.message_id, events.c.profile_id, events.c.properties).where(
                events.c.workspace_id == brand.workspace_id, events.c.event == "Message Delivered"
            )
        ).all()
    assert len(stored) == 1
    assert stored[0].message_id == f"delivery:{entry.id}:delivered" and stored[0].profile_id == pid
    assert stored[0].properties["channel"] == "webhook" and stored[0].properties["outbox_id"] == entry.id
    assert stored[0].properties["template"] == "welcome"
    # Emitting again (a worker killed after the event, before settling) stores nothing new.
    from lifeloop.messaging.service import emit_delivery_events

    assert emit_delivery_events(engine, [(entry, "Message Delivered", None)], now=utcnow()) == 0


def test_attempts_are_logged(
    engine: sa.Engine, brand: Brand, webhook: FakeWebhookServer, adapters: Adapters
) -> None:
    outbox_id = queue(engine, brand, webhook.url, "k")
    drain(engine, adapters)
    with connect(engine) as conn:
        logged = conn.execute(
            sa.select(delivery_attempts).where(
                delivery_attempts.c.workspace_id == brand.workspace_id,
                delivery_attempts.c.outbox_id == outbox_id,
            )
        ).all()
    assert [(a.attempt, a.status, a.worker_id) for a in logged] == [(1, "delivered", "t1")]


def test_a_template_is_rendered_for_the_profile_when_queued(
    engine: sa.Engine, brand: Brand, webhook: FakeWebhookServer, adapters: Adapters
) -> None:
    from lifeloop.messaging.service import send_message
    from lifeloop.messaging.templates.service import create_template

    pid = make_profile(engine, brand, "u1", traits={"name": "Mei"})
    with engine.begin() as conn:
        create_template(
            conn,
            brand.workspace_id,
            key="hello",
            channel="webhook",
            variants={"en": {"text": "Hi {{ traits.name }}"}},
        )
        create_template(
            conn,
            brand.workspace_id,
            key="broken",
            channel="webhook",
            variants={"en": {"text": "{{ traits.name | no_such_filter }}"}},
        )
        entry, _ = send_message(
            conn,
            brand.workspace_id,
            channel="webhook",
            profile_id=pid,
            recipient=webhook.url,
            template="hello",
            transactional=True,
            idempotency_key="t1",
        )
    assert entry.content == {"text": "Hi Mei"} and entry.template == "hello"
    with engine.begin() as conn:
        broken, _ = send_message(
            conn,
            brand.workspace_id,
            channel="webhook",
            profile_id=pid,
            recipient=webhook.url,
            template="broken",
            idempotency_key="t2",
        )
    # Never sent, and the failure is recorded with its reason as a dead letter.
    assert broken.status == "dead"
    assert broken.last_error is not None and "'broken' did not render" in broken.last_error
    assert "no_such_filter" in broken.last_error
    drain(engine, adapters)
    assert webhook.accepted["t1"]["content"] == {"text": "Hi Mei"} and "t2" not in webhook.accepted
    with engine.connect() as conn:
        status = conn.execute(
            sa.select(outbox.c.status).where(
                outbox.c.workspace_id == brand.workspace_id, outbox.c.idempotency_key == "t2"
            )
        ).scalar_one()
    assert status == "dead"
