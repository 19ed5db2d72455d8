"""The resolver places committed events on profiles after ingest: in the API process, or in
`lifeloop worker` processes, and a killed worker loses nothing."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta

import sqlalchemy as sa
from fastapi.testclient import TestClient

from lifeloop.config import Settings
from lifeloop.events.messages import parse_message
from lifeloop.events.models import events
from lifeloop.events.service import ingest
from lifeloop.profiles.resolver import BackgroundResolver, count_pending, resolve_pending
from lifeloop.store.schema import utcnow
from lifeloop.web.app import create_app
from lifeloop.workspaces.models import SourceKey
from tests.conftest import TEST_SECRET_KEY, Brand
from tests.profiles.helpers import assert_consistent, partition


def people_batch(round_: int, size: int = 100) -> list[dict]:
    batch = []
    for i in range(size):
        person = (round_ * size + i) % 150
        batch.append(
            {
                "type": "identify" if i % 4 == 0 else "track",
                "event": "Product Viewed",
                "anonymousId": f"device-{person}-{round_ % 3}",
                "userId": f"user-{person}" if i % 2 == 0 else None,
                "traits": {"email": f"p{person}@example.com"},
                "messageId": f"r{round_}-{i}",
            }
        )
    return batch


def test_ingest_answers_before_resolution_and_the_resolver_catches_up(
    client: TestClient, engine: sa.Engine, brand: Brand
) -> None:
    response = client.post("/v1/batch", json={"batch": people_batch(0)}, auth=brand.auth)
    assert response.json()["accepted"] == 100
    assert count_pending(engine, brand.workspace_id) == 100  # committed, waiting for a profile
    assert resolve_pending(engine, batch_size=30) == 100
    assert count_pending(engine, brand.workspace_id) == 0
    assert resolve_pending(engine) == 0
    assert_consistent(engine, brand.workspace_id)


def test_the_api_process_resolves_in_the_background(
    settings: Settings, engine: sa.Engine, brand: Brand
) -> None:
    app = create_app(settings.model_copy(update={"resolve_in_server": True}), engine)
    with TestClient(app) as client:
        assert client.post("/v1/batch", json={"batch": people_batch(0)}, auth=brand.auth).status_code == 200
        deadline = time.monotonic() + 10
        while count_pending(engine, brand.workspace_id) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert count_pending(engine, brand.workspace_id) == 0
        found = client.get("/api/v1/profiles/lookup?identity=email:p4@example.com", headers=brand.bearer)
        assert found.status_code == 200, found.text


def _worker(settings: Settings) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "LIFELOOP_DATABASE_URL": settings.database_url,
        "LIFELOOP_LOG_LEVEL": "warning",
        "LIFELOOP_SECRET_KEY": TEST_SECRET_KEY,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "lifeloop.cli", "worker", "--idle-seconds", "0.05"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def test_requests_wait_while_resolution_is_past_its_lag_bound(engine: sa.Engine, brand: Brand) -> None:
    # 300 events that arrived a minute ago: past the 30 s bound, so the resolver runs flat out and
    # admit() holds requests until it has caught up (decision 11).
    received = utcnow() - timedelta(minutes=1)
    raws = [
        {"type": "track", "event": "Seen", "userId": f"u{i % 40}", "messageId": f"old-{i}"}
        for i in range(300)
    ]
    key = SourceKey(workspace_id=brand.workspace_id, source_id=brand.source_id)
    ingest(engine, key, [parse_message(r, received_at=received) for r in raws])
    resolver = BackgroundResolver(engine, batch_size=2, quiet_batch_size=2, max_admit_wait=60.0)
    assert not resolver.behind
    resolver.start()
    try:
        resolver.notify()
        deadline = time.monotonic() + 30
        while (
            not resolver.behind and count_pending(engine, brand.workspace_id) and time.monotonic() < deadline
        ):
            time.sleep(0.001)
        assert resolver.behind, "a minute-old backlog is past the bound"
        asyncio.run(resolver.admit())  # returns once the backlog is placed, well before its 60 s cap
        assert not resolver.behind
        assert count_pending(engine, brand.workspace_id) == 0
    finally:
        resolver.stop()
    assert_consistent(engine, brand.workspace_id)


def test_killed_workers_lose_no_event(
    client: TestClient, settings: Settings, engine: sa.Engine, brand: Brand
) -> None:
    """Workers are SIGKILLed mid-work while events keep arriving; the next workers finish the job."""
    for round_ in range(6):
        assert (
            client.post("/v1/batch", json={"batch": people_batch(round_)}, auth=brand.auth).status_code == 200
        )
    accepted = 600
    for round_ in range(6, 12):
        workers = [_worker(settings), _worker(settings)]  # two at once: they must take turns per workspace
        time.sleep(0.3 + 0.1 * round_)
        client.post("/v1/batch", json={"batch": people_batch(round_)}, auth=brand.auth).raise_for_status()
        accepted += 100
        for process in workers:
            process.send_signal(signal.SIGKILL)
            process.wait()
    final = _worker(settings)
    try:
        deadline = time.monotonic() + 60
        while count_pending(engine, brand.workspace_id) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        final.terminate()
        assert final.wait(timeout=30) == 0  # SIGTERM stops it cleanly after the current batch
    assert count_pending(engine, brand.workspace_id) == 0
    with engine.connect() as conn:
        stored = conn.execute(
            sa.select(sa.func.count()).where(events.c.workspace_id == brand.workspace_id)
        ).scalar_one()
    assert stored == accepted
    assert sum(len(group) for group in partition(engine, brand.workspace_id)) == accepted
    assert_consistent(engine, brand.workspace_id)


def test_worker_once_reports_what_it_did(settings: Settings, client: TestClient, brand: Brand) -> None:
    client.post("/v1/batch", json={"batch": people_batch(0, size=10)}, auth=brand.auth).raise_for_status()
    env = {**os.environ, "LIFELOOP_DATABASE_URL": settings.database_url}
    result = subprocess.run(
        [sys.executable, "-m", "lifeloop.cli", "worker", "--once"], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "10 events placed on profiles, 0 profiles re-evaluated by time" in result.stdout
