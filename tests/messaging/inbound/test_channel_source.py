"""Each channel records under one ingest source per workspace, even when first calls race."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import sqlalchemy as sa

from lifeloop.messaging.inbound.service import channel_source
from lifeloop.workspaces.service import list_sources
from tests.conftest import Brand


def test_concurrent_first_callbacks_share_one_source(engine: sa.Engine, brand: Brand) -> None:
    with ThreadPoolExecutor(max_workers=4) as pool:
        keys = list(pool.map(lambda _: channel_source(engine, brand.workspace_id, "line"), range(8)))
    assert len({k.source_id for k in keys}) == 1
    assert channel_source(engine, brand.workspace_id, "email").source_id != keys[0].source_id
    with engine.connect() as conn:
        names = sorted(s.name for s in list_sources(conn, brand.workspace_id))
    assert names == ["channel:email", "channel:line", "web"]
