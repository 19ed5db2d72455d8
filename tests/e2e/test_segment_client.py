"""The official Segment Python client, pointed at lifeloop with its ``host`` setting, for every call type."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from segment.analytics.client import Client

from lifeloop.events.models import events
from lifeloop.profiles.resolver import resolve_pending
from tests.conftest import Brand, LiveServer


@pytest.mark.parametrize("gzip", [False, True], ids=["plain", "gzip"])
def test_official_segment_client_every_call_type(
    live_server: LiveServer, engine: sa.Engine, brand: Brand, gzip: bool
) -> None:
    failures: list[Exception] = []
    client = Client(
        write_key=brand.write_key,
        host=live_server.url,
        gzip=gzip,
        on_error=lambda error, _batch: failures.append(error),
        max_retries=2,
        upload_size=4,  # several batches, as a busy client would send
    )
    when = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    client.identify(
        "user-1", {"name": "Lin", "email": "lin@example.com"}, anonymous_id="anon-1", message_id="c-identify"
    )
    client.track("user-1", "Order Completed", {"revenue": 88.0}, timestamp=when, message_id="c-track")
    client.page(
        "user-1", category="booking", name="Reserve", properties={"path": "/reserve"}, message_id="c-page"
    )
    client.screen("user-1", "App", "Home", message_id="c-screen")
    client.group("user-1", "shop-42", {"name": "Taipei Main St."}, message_id="c-group")
    client.alias("anon-1", "user-1", message_id="c-alias")
    client.track(anonymous_id="anon-2", event="Page Scrolled", message_id="c-anon")
    # A retry of an already sent message is stored once.
    client.track("user-1", "Order Completed", {"revenue": 88.0}, timestamp=when, message_id="c-track")
    client.flush()
    client.join()
    assert failures == []
    resolve_pending(engine)

    with engine.connect() as conn:
        rows = {
            r.message_id: r
            for r in conn.execute(sa.select(events).where(events.c.workspace_id == brand.workspace_id))
        }
    assert set(rows) == {"c-identify", "c-track", "c-page", "c-screen", "c-group", "c-alias", "c-anon"}
    assert rows["c-track"].event == "Order Completed"
    assert rows["c-track"].properties == {"revenue": 88.0}
    assert rows["c-track"].context["library"]["name"] == "analytics-python"
    # The client stamps sentAt; a correct device clock leaves the timestamp within a second of the original.
    assert abs((rows["c-track"].timestamp - when).total_seconds()) < 5
    assert rows["c-page"].name == "Reserve" and rows["c-page"].properties["category"] == "booking"
    assert rows["c-group"].group_id == "shop-42"
    assert rows["c-alias"].previous_id == "anon-1"
    assert rows["c-identify"].traits == {"name": "Lin", "email": "lin@example.com"}
    people = {r.profile_id for k, r in rows.items() if k != "c-anon"}
    assert len(people) == 1 and rows["c-anon"].profile_id not in people
