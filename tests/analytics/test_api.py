"""GET /api/v1/analytics/*: chart-ready JSON from events ingested, resolved and synced for real."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from lifeloop.analytics.rfm import score_rfm
from lifeloop.analytics.store import store
from lifeloop.analytics.sync import sync
from lifeloop.profiles.resolver import resolve_pending
from tests.conftest import Brand, make_brand

T0 = datetime(2024, 5, 6, 4, 0, tzinfo=UTC)  # a Monday, noon in Taipei


def at(days: float) -> str:
    return (T0 + timedelta(days=days)).isoformat()


def post(client: TestClient, brand: Brand, messages: list[dict[str, Any]]) -> None:
    response = client.post("/v1/batch", json={"batch": messages}, auth=brand.auth)
    assert response.status_code == 200, response.text
    resolve_pending(client.app.state.engine)


@pytest.fixture
def analytics(client: TestClient, engine: sa.Engine, brand: Brand, tmp_path: Path) -> Path:
    path = tmp_path / "analytics.duckdb"
    client.app.state.analytics_path = path
    history = []
    for i, user in enumerate(["ann", "bob", "cat"]):
        history.append({"type": "track", "userId": user, "event": "Product Viewed", "timestamp": at(i)})
        history.append({"type": "track", "userId": user, "event": "Product Added", "timestamp": at(i + 0.1)})
    history.append(
        {"type": "track", "userId": "ann", "event": "Order Completed", "properties": {"revenue": "30"},
         "timestamp": at(0.2)}
    )  # fmt: skip
    history.append({"type": "track", "anonymousId": "a-1", "event": "Product Viewed", "timestamp": at(1)})
    post(client, brand, history)
    sync(engine, path, settle_seconds=0)
    return path


def get(client: TestClient, brand: Brand, url: str, **params: Any):
    return client.get(url, params=params, headers=brand.bearer)


def test_metric_as_chart_json(client: TestClient, brand: Brand, analytics: Path) -> None:
    r = get(client, brand, "/api/v1/analytics/new_users", start="2024-05-06", end="2024-05-08")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["metric"] == "new_users"
    assert body["columns"] == ["day", "new_users"]
    assert body["data"] == [["2024-05-06", 1], ["2024-05-07", 2], ["2024-05-08", 1]]
    assert body["chart"] == {"type": "bar", "x": "day", "series": ["new_users"]}
    assert set(body["timings_ms"]) == {"build", "run", "finish"}
    assert body["params"]["start"] == "2024-05-06"


def test_funnel_takes_repeated_steps(client: TestClient, brand: Brand, analytics: Path) -> None:
    r = client.get(
        "/api/v1/analytics/funnel?start=2024-05-06&end=2024-05-10"
        "&steps=Product%20Viewed&steps=Product%20Added&steps=Order%20Completed",
        headers=brand.bearer,
    )
    assert r.status_code == 200, r.text
    assert [row[2] for row in r.json()["data"]] == [4, 3, 1]


def test_a_merge_after_sync_counts_one_person(
    client: TestClient, engine: sa.Engine, brand: Brand, analytics: Path
) -> None:
    def dau() -> int:
        r = get(client, brand, "/api/v1/analytics/active_users", start="2024-05-07", end="2024-05-07")
        return r.json()["data"][0][1]

    assert dau() == 2  # bob and the anonymous visitor
    post(client, brand, [{"type": "alias", "previousId": "a-1", "userId": "bob", "timestamp": at(2)}])
    sync(engine, analytics, settle_seconds=0)
    assert dau() == 1


def test_rfm_layers(client: TestClient, brand: Brand, analytics: Path) -> None:
    with store(analytics) as con:
        score_rfm(con, brand.workspace_id, as_of=T0 + timedelta(days=5))
    r = get(client, brand, "/api/v1/analytics/rfm")
    assert r.status_code == 200
    layers = dict(r.json()["data"])
    assert sum(layers.values()) == 4 and layers["new"] == 1  # ann: one recent order


BAD = [
    ("/api/v1/analytics/nope", {"start": "2024-05-06", "end": "2024-05-07"}, 404, None),
    ("/api/v1/analytics/new_users", {"end": "2024-13-01"}, 400, "end"),
    ("/api/v1/analytics/new_users", {"start": "2024-05-09", "end": "2024-05-07"}, 400, None),
    ("/api/v1/analytics/new_users", {"start": "yesterday", "end": "2024-05-07"}, 400, "start"),
    (
        "/api/v1/analytics/new_users",
        {"start": "2024-05-06", "end": "2024-05-07", "colour": "red"},
        400,
        "colour",
    ),
    ("/api/v1/analytics/funnel", {"start": "2024-05-06", "end": "2024-05-07", "steps": "A"}, 400, "steps"),
    ("/api/v1/analytics/retention", {"start": "2024-05-06", "end": "2024-05-07", "days": "0"}, 400, "days"),
]


@pytest.mark.parametrize(("url", "params", "status", "field"), BAD)
def test_bad_requests_say_why(
    client: TestClient,
    brand: Brand,
    analytics: Path,
    url: str,
    params: dict[str, str],
    status: int,
    field: str,
) -> None:
    r = get(client, brand, url, **params)
    assert r.status_code == status, r.text
    if field:
        assert r.json()["field"] == field


def test_needs_a_token_and_sees_only_its_workspace(
    client: TestClient, engine: sa.Engine, brand: Brand, analytics: Path
) -> None:
    assert client.get("/api/v1/analytics/new_users?start=2024-05-06&end=2024-05-08").status_code == 401
    other = make_brand(engine, "other")
    r = get(
        client, other, "/api/v1/analytics/new_users", start="2024-05-06", end="2024-05-08", workspace_id=1
    )
    assert r.status_code == 400  # the workspace comes from the token, never from a parameter
    r = get(client, other, "/api/v1/analytics/new_users", start="2024-05-06", end="2024-05-08")
    assert [row[1] for row in r.json()["data"]] == [0, 0, 0]


def test_lists_metrics_with_parameters(client: TestClient, brand: Brand) -> None:
    body = get(client, brand, "/api/v1/analytics").json()
    names = {m["name"]: m for m in body["metrics"]}
    assert "funnel" in names and "steps" in names["funnel"]["params"]
    assert "workspace_id" not in names["funnel"]["params"]
