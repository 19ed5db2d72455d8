"""Crash safety of journeys on PostgreSQL: 2 000 users move through a five-step journey with waits and
sends while two ``lifeloop worker`` processes are SIGKILLed at random moments and restarted. Every user
must end completed, exactly once, and the provider imitation must accept each message key exactly once."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from lifeloop.config import Settings
from lifeloop.journeys import service
from lifeloop.journeys.models import journey_runs, journey_steps
from lifeloop.messaging.models import outbox
from lifeloop.profiles.service import live_profile_ids
from lifeloop.store.engine import connect
from tests.conftest import TEST_SECRET_KEY, Brand
from tests.fakes.webhook_server import FakeWebhookServer
from tests.journeys.world import World
from tests.killing import kill_until_done
from tests.messaging.helpers import SECRET

# Enough for a dozen kills mid-work; throughput at scale is bench/journeys.py's business.
USERS = 2_000
pytestmark = [pytest.mark.slow]


def five_steps(url: str) -> dict:
    return {
        "key": "crash_course",
        "name": {"zh-CN": "崩溃测试", "en": "Crash course"},
        "trigger": {"kind": "manual"},
        "steps": [
            {"key": "hello", "type": "webhook", "url": url, "body": {"say": "hello"}},
            {"key": "pause", "type": "wait", "duration": "2s"},
            {"key": "again", "type": "webhook", "url": url, "body": {"say": "again"}},
            {"key": "settle", "type": "wait", "duration": "1s"},
            {"key": "mark", "type": "add_tag", "tag": "crash_done"},
        ],
    }


@pytest.fixture
def provider() -> Iterator[FakeWebhookServer]:
    with FakeWebhookServer(SECRET) as server:
        yield server


def _worker(settings: Settings, tmp: str) -> subprocess.Popen:
    env = {
        **os.environ,
        "LIFELOOP_DATABASE_URL": settings.database_url,
        "LIFELOOP_STRICT_SCOPING": "true",
        "LIFELOOP_WEBHOOK_SECRET": SECRET,
        "LIFELOOP_SECRET_KEY": TEST_SECRET_KEY,
        "LIFELOOP_ANALYTICS_PATH": os.path.join(tmp, "analytics.duckdb"),
    }
    command = [
        sys.executable,
        "-m",
        "lifeloop.cli",
        "worker",
        "--delivery-lease",
        "3",
        "--analytics-seconds",
        "0",
    ]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _progress(engine: sa.Engine, workspace_id: int) -> Counter[str]:
    with connect(engine) as conn:
        runs = conn.execute(
            sa.select(journey_runs.c.status, sa.func.count())
            .where(journey_runs.c.workspace_id == workspace_id)
            .group_by(journey_runs.c.status)
        )
        counts = Counter({r[0]: r[1] for r in runs})
        counts["delivered"] = conn.execute(
            sa.select(sa.func.count()).where(
                outbox.c.workspace_id == workspace_id, outbox.c.status == "delivered"
            )
        ).scalar_one()
    return counts


@pytest.mark.parametrize("backend", ["postgresql"])
def test_killed_workers_lose_no_user_and_send_nothing_twice(
    engine: sa.Engine, brand: Brand, settings: Settings, provider: FakeWebhookServer, tmp_path: object
) -> None:
    world = World(engine, brand)
    for start in range(0, USERS, 1000):
        world.ingest(
            [
                {"type": "identify", "userId": f"u{i}", "messageId": f"id-{i}", "traits": {"n": i}}
                for i in range(start, start + 1000)
            ]
        )
    world.journey(five_steps(provider.url))
    with engine.begin() as conn:
        pids = live_profile_ids(conn, brand.workspace_id)
        assert len(pids) == USERS
        service.enter_profiles(
            conn, brand.workspace_id, "crash_course", profile_ids=pids, idempotency_key="all"
        )

    def finished() -> tuple[bool, object]:
        progress = _progress(engine, brand.workspace_id)
        return progress["completed"] == USERS and progress["delivered"] == 2 * USERS, progress

    kills = kill_until_done(lambda: _worker(settings, str(tmp_path)), finished, seed=20261205, seconds=420,
                            max_kills=12, pause=(0.5, 2.5))  # fmt: skip

    assert kills >= 6
    with connect(engine) as conn:
        runs = conn.execute(
            sa.select(journey_runs.c.profile_id, journey_runs.c.status, journey_runs.c.steps_done).where(
                journey_runs.c.workspace_id == brand.workspace_id
            )
        ).all()
        logged = Counter(
            (r.run_id, r.step)
            for r in conn.execute(
                sa.select(journey_steps.c.run_id, journey_steps.c.step).where(
                    journey_steps.c.workspace_id == brand.workspace_id
                )
            )
        )
        keys = list(
            conn.execute(
                sa.select(outbox.c.idempotency_key).where(outbox.c.workspace_id == brand.workspace_id)
            ).scalars()
        )
        tagged = conn.execute(
            sa.text("SELECT count(*) FROM profile_tags WHERE workspace_id = :ws AND tag = 'crash_done'"),
            {"ws": brand.workspace_id},
        ).scalar_one()
    # Every user once, at the end; every step once per run; two messages per user, each accepted once.
    assert len(runs) == USERS and {r.profile_id for r in runs} == set(pids)
    assert {(r.status, r.steps_done) for r in runs} == {("completed", 5)}
    assert len(logged) == 5 * USERS and set(logged.values()) == {1}
    assert tagged == USERS
    assert len(keys) == 2 * USERS
    accepted = provider.acceptances_per_key()
    assert set(accepted) == set(keys) and set(accepted.values()) == {1}
