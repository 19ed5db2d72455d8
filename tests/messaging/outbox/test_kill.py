"""Crash safety: a delivery worker SIGKILLed in the middle of a batch, then replaced, still delivers every
message exactly once to a provider that de-duplicates by Idempotency-Key; concurrent workers never claim
the same message twice. Workers are real subprocesses (``python -m lifeloop.messaging.delivery_worker``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator

import pytest
import sqlalchemy as sa

from lifeloop.config import Settings
from lifeloop.messaging.models import delivery_attempts, outbox
from lifeloop.messaging.outbox import enqueue
from lifeloop.store.engine import connect
from tests.conftest import Brand
from tests.fakes.webhook_server import FakeWebhookServer
from tests.messaging.helpers import SECRET

N = 200
pytestmark = pytest.mark.slow


@pytest.fixture
def slow_provider() -> Iterator[FakeWebhookServer]:
    with FakeWebhookServer(SECRET, delay=0.05) as server:
        yield server


@pytest.fixture
def start_worker(settings: Settings) -> Iterator[Callable[..., subprocess.Popen]]:
    started: list[subprocess.Popen] = []

    def start(worker_id: str, *, lease: float = 3.0, batch: int = 20) -> subprocess.Popen:
        env = {**os.environ, "LIFELOOP_STRICT_SCOPING": "true", "LIFELOOP_LOG_LEVEL": "warning"}
        args = [
            "--database-url",
            settings.database_url,
            "--worker-id",
            worker_id,
            "--lease-seconds",
            str(lease),
        ]
        args += ["--batch-size", str(batch), "--concurrency", "4", "--poll-interval", "0.1"]
        proc = subprocess.Popen(
            [sys.executable, "-m", "lifeloop.messaging.delivery_worker", *args, "--webhook-secret", SECRET],
            env=env,
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def enqueue_many(engine: sa.Engine, brand: Brand, url: str) -> list[str]:
    keys = [f"msg-{i:04d}" for i in range(N)]
    with engine.begin() as conn:
        for key in keys:
            enqueue(
                conn,
                brand.workspace_id,
                channel="webhook",
                recipient=url,
                content={"text": key},
                idempotency_key=key,
                transactional=True,
            )
    return keys


def statuses(engine: sa.Engine, brand: Brand) -> Counter[str]:
    with connect(engine) as conn:
        rows = conn.execute(
            sa.select(outbox.c.status, sa.func.count())
            .where(outbox.c.workspace_id == brand.workspace_id)
            .group_by(outbox.c.status)
        )
        return Counter({r[0]: r[1] for r in rows})


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_worker_killed_mid_batch_delivers_every_message_exactly_once(
    engine: sa.Engine,
    brand: Brand,
    slow_provider: FakeWebhookServer,
    start_worker: Callable[..., subprocess.Popen],
) -> None:
    keys = enqueue_many(engine, brand, slow_provider.url)
    first = start_worker("w1")
    # Kill it while it holds claimed messages with requests in flight, about a quarter of the way in.
    wait_for(lambda: slow_provider.accepted_count() >= N // 4, 60, "the first deliveries")
    wait_for(lambda: statuses(engine, brand)["sending"] > 0, 10, "a claimed batch")
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    at_kill = statuses(engine, brand)
    assert at_kill["sending"] > 0 and at_kill["delivered"] < N

    start_worker("w2")
    wait_for(lambda: statuses(engine, brand)["delivered"] == N, 120, "every message delivered")

    accepted = slow_provider.acceptances_per_key()
    assert set(accepted) == set(keys) and set(accepted.values()) == {1}  # each key accepted exactly once
    assert sorted(slow_provider.accepted) == keys
    with connect(engine) as conn:
        rows = conn.execute(
            sa.select(outbox.c.idempotency_key, outbox.c.attempts, outbox.c.provider_message_id).where(
                outbox.c.workspace_id == brand.workspace_id
            )
        ).all()
        delivered_logs = Counter(
            r.outbox_id
            for r in conn.execute(
                sa.select(delivery_attempts.c.outbox_id).where(
                    delivery_attempts.c.workspace_id == brand.workspace_id,
                    delivery_attempts.c.status == "delivered",
                )
            )
        )
    assert statuses(engine, brand) == Counter({"delivered": N})
    assert len(delivered_logs) == N and set(delivered_logs.values()) == {1}
    # The messages the killed worker held were taken over (attempt 2) and sent again with the same key:
    # the provider answered those with the id it had already given, and nothing arrived twice.
    taken_over = [r for r in rows if r.attempts == 2]
    assert taken_over
    assert all(r.provider_message_id == slow_provider.accepted[r.idempotency_key]["_id"] for r in rows)


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_concurrent_workers_never_claim_the_same_message(
    engine: sa.Engine,
    brand: Brand,
    slow_provider: FakeWebhookServer,
    start_worker: Callable[..., subprocess.Popen],
) -> None:
    keys = enqueue_many(engine, brand, slow_provider.url)
    for worker in ("a", "b", "c"):
        start_worker(worker, lease=60, batch=10)
    wait_for(lambda: statuses(engine, brand)["delivered"] == N, 120, "every message delivered")
    with connect(engine) as conn:
        logs = conn.execute(
            sa.select(delivery_attempts.c.outbox_id, delivery_attempts.c.worker_id).where(
                delivery_attempts.c.workspace_id == brand.workspace_id
            )
        ).all()
        attempts = {
            r.attempts
            for r in conn.execute(
                sa.select(outbox.c.attempts).where(outbox.c.workspace_id == brand.workspace_id)
            )
        }
    assert len(logs) == N and len({r.outbox_id for r in logs}) == N  # one send per message
    assert attempts == {1}
    assert slow_provider.requests_per_key() == Counter(dict.fromkeys(keys, 1))  # nobody sent anything twice
    assert len({r.worker_id for r in logs}) >= 2  # the work was actually shared
