from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from lifeloop.messaging.delivery_worker import Adapters
from tests.fakes.webhook_server import FakeWebhookServer
from tests.messaging.helpers import SECRET


@pytest.fixture
def webhook() -> Iterator[FakeWebhookServer]:
    with FakeWebhookServer(SECRET) as server:
        yield server


@pytest.fixture
def adapters(engine: sa.Engine) -> Iterator[Adapters]:
    adapters = Adapters(engine, webhook_secret=SECRET)
    yield adapters
    adapters.close()
