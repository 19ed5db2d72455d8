"""Crash safety of a broadcast on PostgreSQL: 2 000 LINE friends while two ``lifeloop worker`` processes
are SIGKILLed at random moments — while the audience is taken, chunks are queued, and multicasts are at
the LINE imitation, which answers slowly so that a worker often dies after LINE accepted its request.
Every friend must receive the message exactly once, and every message must end delivered."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter

import pytest
import sqlalchemy as sa

from lifeloop.broadcasts import service
from lifeloop.broadcasts.models import broadcasts
from lifeloop.config import Settings
from lifeloop.messaging.models import outbox
from lifeloop.messaging.service import update_policy
from lifeloop.store.engine import connect
from tests.conftest import TEST_SECRET_KEY, Brand
from tests.fakes.line import FakeLine
from tests.killing import kill_until_done
from tests.messaging.outbox.test_multicast import connect_line, friend, friends
from tests.messaging.outbox.test_multicast import line_api as line_api
from tests.messaging.outbox.test_multicast import (
    secret_key as secret_key,  # autouse: workers decrypt the token
)

from .test_broadcasts import everyone_segment, sale_template

FRIENDS = 2_000
pytestmark = [pytest.mark.slow]


def _worker(settings: Settings, tmp: str) -> subprocess.Popen:
    env = {
        **os.environ,
        "LIFELOOP_DATABASE_URL": settings.database_url,
        "LIFELOOP_STRICT_SCOPING": "true",
        "LIFELOOP_SECRET_KEY": TEST_SECRET_KEY,
        "LIFELOOP_ANALYTICS_PATH": os.path.join(tmp, "analytics.duckdb"),
    }
    command = [sys.executable, "-m", "lifeloop.cli", "worker", "--delivery-lease", "3",
               "--analytics-seconds", "0", "--no-journeys", "--idle-seconds", "0.05"]  # fmt: skip
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _status(engine: sa.Engine, workspace_id: int) -> tuple[str, Counter[str]]:
    with connect(engine) as conn:
        status = conn.execute(
            sa.select(broadcasts.c.status).where(broadcasts.c.workspace_id == workspace_id)
        ).scalar_one()
        counts = Counter(
            {
                row[0]: row[1]
                for row in conn.execute(
                    sa.select(outbox.c.status, sa.func.count())
                    .where(outbox.c.workspace_id == workspace_id)
                    .group_by(outbox.c.status)
                )
            }
        )
    return status, counts


@pytest.mark.parametrize("backend", ["postgresql"])
def test_killed_workers_send_each_friend_the_broadcast_exactly_once(
    engine: sa.Engine, brand: Brand, settings: Settings, line_api: FakeLine, tmp_path: object
) -> None:
    connect_line(engine, brand, line_api)
    friends(engine, brand, FRIENDS)
    sale_template(engine, brand)
    everyone_segment(engine, brand)
    with engine.begin() as conn:  # sent at the real time of day: no quiet hours in the way
        update_policy(conn, brand.workspace_id, {"quiet_hours_start": "00:00", "quiet_hours_end": "00:00"})
        definition = {
            "audience": {"segment": "friends"},
            "channels": [{"channel": "line", "template": "sale"}],
        }
        service.create_broadcast(
            conn, brand.workspace_id, key="yearend", name="Year-end", definition=definition
        )
        service.schedule_broadcast(conn, brand.workspace_id, "yearend")
    line_api.answer_delay = 0.4  # LINE has the multicast; the worker may die before it hears so

    def sent() -> tuple[bool, object]:
        status, counts = _status(engine, brand.workspace_id)
        return status == "sent", (status, counts)

    kills = kill_until_done(lambda: _worker(settings, str(tmp_path)), sent, seed=20261207, seconds=240,
                            max_kills=10, pause=(0.2, 1.5))  # fmt: skip
    counts = _status(engine, brand.workspace_id)[1]
    assert kills >= 3
    assert counts == Counter({"delivered": FRIENDS})
    received = Counter(user for user, _message in line_api.delivered)
    assert received == Counter({friend(i): 1 for i in range(FRIENDS)})
    multicasts = line_api.calls("/v2/bot/message/multicast")
    assert multicasts and all(len(r.json["to"]) <= 500 for r in multicasts)
