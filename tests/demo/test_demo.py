"""The demo brand: a deterministic, lifelike history that the real ingest API accepts, loaded end to end."""

from __future__ import annotations

import io
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from rich.console import Console

from lifeloop.config import Settings, get_settings
from lifeloop.demo import Simulation, simulate, summarize
from lifeloop.demo.runner import run_demo
from lifeloop.errors import Conflict
from lifeloop.events.messages import MAX_BATCH_BYTES, parse_batch
from lifeloop.events.models import events
from lifeloop.profiles.models import profile_merges, profiles
from lifeloop.store.engine import create_store_engine
from lifeloop.web.app import create_app
from lifeloop.workspaces.models import sources, workspaces
from tests.conftest import free_port

END = datetime(2025, 11, 30, 12, tzinfo=UTC)  # the window covers 618 and 雙11
CANONICAL = {
    "Channel Followed",
    "Channel Unfollowed",
    "Menu Clicked",
    "Message Received",
    "Survey Submitted",
    "Product Viewed",
    "Product Added",
    "Product Added to Wishlist",
    "Checkout Started",
    "Order Completed",
    "Order Refunded",
    "Product Reviewed",
    "Referral Completed",
}


@pytest.fixture(scope="module")
def brand() -> Simulation:
    """The default demo size, as `make demo` loads it."""
    return Simulation(3000, 180, seed=7, end=END)


@pytest.fixture(scope="module")
def history(brand: Simulation) -> list[dict]:
    return list(brand)


def test_same_seed_gives_the_same_events_and_another_seed_does_not() -> None:
    first = list(simulate(200, 60, seed=3, end=END))
    assert first == list(simulate(200, 60, seed=3, end=END))
    assert first != list(simulate(200, 60, seed=4, end=END))


def test_events_are_in_time_order_inside_the_window_with_unique_ids(history: list[dict]) -> None:
    stamps = [datetime.fromisoformat(m["timestamp"]) for m in history]
    assert stamps == sorted(stamps)
    assert END - timedelta(days=180) <= stamps[0] and stamps[-1] <= END
    assert len({m["messageId"] for m in history}) == len(history)
    assert not any("sentAt" in m for m in history)  # historical timestamps, no skew correction


def test_every_batch_passes_the_servers_validation(history: list[dict]) -> None:
    for start in range(0, len(history), 100):
        body = orjson.dumps({"batch": history[start : start + 100]})
        assert len(body) < MAX_BATCH_BYTES
        messages = parse_batch(orjson.loads(body), received_at=END)
        assert [m.timestamp for m in messages] == [
            datetime.fromisoformat(m["timestamp"]) for m in history[start : start + 100]
        ]
    identifies = parse_batch({"batch": [m for m in history if m["type"] == "identify"][:50]}, received_at=END)
    kinds = {kind for m in identifies for kind, _ in m.external_ids}
    assert {"email", "phone", "line_user_id"} <= kinds


def test_volume_and_mix_are_those_of_a_real_brand(brand: Simulation, history: list[dict]) -> None:
    summary = brand.summary()
    assert 100_000 <= summary.events <= 200_000
    assert summarize(history) == summary.by_event
    assert set(summary.by_event) >= CANONICAL
    assert summary.by_event["page"] > summary.by_event["Product Viewed"] > summary.by_event["Order Completed"]
    # Most people who sign up were seen anonymously first; the profile merges that causes are the point.
    assert summary.anonymous_then_identified >= 0.8 * summary.identified > 0.3 * summary.customers
    assert 0.2 * summary.customers < summary.buyers < 0.6 * summary.customers
    assert summary.repeat_buyers > 0.25 * summary.buyers
    assert 0.25 * summary.customers < summary.dormant < 0.7 * summary.customers
    assert 0 < summary.unfollowed < summary.followers


def test_a_loyal_few_make_many_of_the_orders(brand: Simulation) -> None:
    orders = sorted((c.orders for c in brand.customers if c.orders), reverse=True)
    top_tenth = orders[: len(orders) // 10]
    assert sum(top_tenth) > 0.3 * sum(orders)
    assert max(orders) >= 10


def test_sales_days_peak(history: list[dict]) -> None:
    orders_per_day = Counter(
        (datetime.fromisoformat(m["timestamp"]) + timedelta(hours=8)).date()
        for m in history
        if m.get("event") == "Order Completed"
    )
    typical = sorted(orders_per_day.values())[len(orders_per_day) // 2]
    assert orders_per_day[datetime(2025, 11, 11).date()] > 2 * typical
    assert orders_per_day[datetime(2025, 6, 18).date()] > 1.5 * typical


def test_referrals_credit_an_earlier_member(brand: Simulation, history: list[dict]) -> None:
    signed_up = {m["userId"]: m["timestamp"] for m in reversed(history) if m["type"] == "identify"}
    referrals = [m for m in history if m.get("event") == "Referral Completed"]
    assert referrals
    for message in referrals:
        referrer = message["properties"]["referrer_id"]
        assert message["userId"] == referrer
        assert datetime.fromisoformat(signed_up[referrer]) < datetime.fromisoformat(message["timestamp"])


@pytest.fixture
def demo_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    monkeypatch.setenv("LIFELOOP_DATABASE_URL", f"sqlite:///{tmp_path / 'demo.db'}")
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


def _watch_health(port: int, stop: threading.Event, seen: list[tuple[int, int, str]]) -> None:
    """Record (liveness status, readiness status, readiness reason) while the demo's server runs."""
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=2.0) as client:
        while not stop.is_set():
            try:
                alive, ready = client.get("/health"), client.get("/health/ready")
            except httpx.TransportError:
                time.sleep(0.02)
                continue
            seen.append((alive.status_code, ready.status_code, ready.json().get("reason", "")))


def test_demo_loads_through_the_api_and_a_second_run_stores_nothing_new(demo_database: Settings) -> None:
    output = io.StringIO()
    console = Console(file=output, width=200)
    port, stop, seen = free_port(), threading.Event(), []
    watcher = threading.Thread(target=_watch_health, args=(port, stop, seen))
    watcher.start()
    try:
        first = run_demo(customers=150, days=60, serve=False, port=port, console=console)
    finally:
        stop.set()
        watcher.join()
    # Alive from the start, but not ready while the brand's history is still being loaded.
    assert seen and all(alive == 200 for alive, _, _ in seen)
    assert (200, 503, "loading the demo brand (150 customers, 60 days of history)") in seen
    assert first.events > 1000
    assert (first.accepted, first.duplicates) == (first.events, 0)
    assert first.api_token in output.getvalue() and f"{first.base_url}/docs" in output.getvalue()

    engine = create_store_engine(demo_database)
    try:
        with engine.connect() as conn:
            # Every sent event is stored once; the rest are lifeloop's own stage events (the demo runs
            # the line lifecycle preset), each on a profile.
            sent = sa.select(sa.func.count()).where(events.c.source_id.is_not(None))
            assert conn.execute(sent.execution_options(cross_workspace=True)).scalar_one() == first.events
            stages = sa.select(sa.func.count()).where(events.c.event == "Lifecycle Stage Entered")
            assert conn.execute(stages.execution_options(cross_workspace=True)).scalar_one() > 100  # of 150
            identified = sa.select(sa.func.count()).where(
                profiles.c.user_id.is_not(None), profiles.c.merged_into.is_(None)
            )
            assert conn.execute(identified).scalar_one() > 30
            assert conn.execute(sa.select(sa.func.count()).select_from(profile_merges)).scalar_one() > 0
        with TestClient(create_app(demo_database, engine)) as client:
            assert client.get("/health/ready").json()["status"] == "ok"  # loaded, migrated
            bearer = {"Authorization": f"Bearer {first.api_token}"}
            page = client.get("/api/v1/profiles", params={"limit": 5}, headers=bearer).json()
            assert len(page["items"]) == 5
            found = client.get(
                "/api/v1/profiles/lookup",
                params={"identity": f"email:{first.showcase_email}"},
                headers=bearer,
            ).json()
            assert found["id"] == first.showcase_profile_id and found["user_id"] == first.showcase_user_id
            timeline = client.get(f"/api/v1/profiles/{found['id']}/events", headers=bearer).json()
            stamps = [e["timestamp"] for e in timeline["items"]]
            assert stamps and stamps == sorted(stamps, reverse=True)
            orders = client.get(
                f"/api/v1/profiles/{found['id']}/events", params={"event": "Order Completed"}, headers=bearer
            ).json()
            assert orders["items"] and all(e["properties"]["currency"] == "TWD" for e in orders["items"])

        quiet_output = io.StringIO()
        quiet = Console(file=quiet_output, width=200)
        again = run_demo(customers=150, days=60, serve=False, port=free_port(), console=quiet)
        assert (again.accepted, again.duplicates) == (0, again.events)
        # The same console login, its password set back to the one printed again.
        assert first.login and again.login and (first.login.created, again.login.created) == (True, False)
        assert f"login {again.login.email} / {again.login.password}" in quiet_output.getvalue()
        assert again.source == "demo-web-2" and again.api_token != first.api_token
        with engine.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(workspaces)).scalar_one() == 1
            assert conn.execute(sa.select(sa.func.count()).select_from(sources)).scalar_one() == 2
            assert conn.execute(sent.execution_options(cross_workspace=True)).scalar_one() == first.events
    finally:
        engine.dispose()


def test_a_taken_port_fails_with_a_clear_message(demo_database: Settings) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(Conflict, match=f"port {port} .* already in use"):
            run_demo(customers=10, days=7, serve=False, port=port, console=Console(file=io.StringIO()))
