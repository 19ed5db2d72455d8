"""The analytics pages: every chart's embedded JSON equals the REST API's answer for the same metric, from
events ingested, resolved and synced for real; bad parameters are refused inline with 400; the churn-risk
export needs ``analyse``; the pages read in Traditional Chinese."""

from __future__ import annotations

import csv
import io
import json
import random
import re
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from lifeloop.analytics.refresh import refresh
from lifeloop.analytics.service import (
    at_risk_customers,
    customer_value,
    set_channel_costs,
    value_distribution,
)
from lifeloop.analytics.store import store
from lifeloop.profiles.resolver import resolve_pending
from tests.conftest import Brand, make_brand
from tests.web.console.conftest import Console

T0 = datetime(2024, 3, 4, 4, 0, tzinfo=UTC)  # a Monday, noon in Taipei
START, END = "2024-03-04", "2024-05-31"
AS_OF = "2024-05-31"
CHANNELS = ("line", "ads", "wecom")


def at(days: float) -> str:
    return (T0 + timedelta(days=days)).isoformat()


def order_days(rng: random.Random, first: int) -> list[int]:
    """Days of a customer's orders as BG/NBD pictures them: a Poisson rate of their own while active, and
    after each order a chance of leaving for good (the dropout the CLV models are fitted on)."""
    rate, leave = rng.gammavariate(2.0, 0.4), rng.betavariate(2.0, 5.0)  # orders a week, P(leave)
    days, t = [first + 1], first + 1.0
    while rng.random() >= leave:
        t += rng.expovariate(rate) * 7
        if t >= 86:
            break
        days.append(int(t))
    return days


def shop_history(prefix: str, customers: int, seed: int) -> list[dict[str, Any]]:
    """Visitors who view, add and order over three months; every 5th never orders (the funnel's
    drop-off)."""
    rng, clock = random.Random(seed), random.Random(seed + 1)
    messages: list[dict[str, Any]] = []
    for i in range(customers):
        user = f"{prefix}{i:02d}"
        first = rng.randint(0, 20)
        messages.append(
            {"type": "track", "userId": user, "event": "Product Viewed", "timestamp": at(first),
             "context": {"campaign": {"source": CHANNELS[i % len(CHANNELS)]}}}
        )  # fmt: skip
        if i % 5 == 4:
            continue
        spend = rng.gammavariate(3.0, 30.0)  # a customer's typical order value (Gamma-Gamma's picture)
        for d in order_days(rng, first):
            t = d + clock.random() * 0.4  # the same calendar day in Taipei
            messages += [
                {"type": "track", "userId": user, "event": "Product Viewed", "timestamp": at(t)},
                {"type": "track", "userId": user, "event": "Product Added", "timestamp": at(t + 0.01)},
                {"type": "track", "userId": user, "event": "Order Completed", "timestamp": at(t + 0.02),
                 "properties": {"revenue": round(rng.gammavariate(4.0, spend / 4.0), 2)}},
            ]  # fmt: skip
    return messages


def ingest(client: TestClient, brand: Brand, messages: list[dict[str, Any]]) -> None:
    for i in range(0, len(messages), 200):
        response = client.post("/v1/batch", json={"batch": messages[i : i + 200]}, auth=brand.auth)
        assert response.status_code == 200, response.text
    resolve_pending(client.app.state.engine)


@pytest.fixture
def analytics(client: TestClient, engine: sa.Engine, brand: Brand) -> Path:
    """The brand's shop history (and another workspace's, which must never show) synced and RFM-scored
    as the worker does, with acquisition costs loaded for two channels."""
    ingest(client, brand, shop_history("c", 40, seed=2))
    other = make_brand(engine, "other")
    ingest(client, other, [{"type": "track", "userId": "x", "event": "Secret Event", "timestamp": at(1)}])
    path = Path(client.app.state.analytics_path)
    refresh(engine, path, settle_seconds=0)
    costs = pd.DataFrame(
        {"channel": ["line", "ads"], "day": ["2024-03-05", "2024-03-06"], "cost": [300.0, 90.0]}
    )
    with store(path) as con:
        set_channel_costs(con, brand.workspace_id, costs)
    return path


def chart_data(html: str, chart: str) -> dict[str, Any]:
    """The JSON a ``data-chart`` element draws (console.js reads the same script)."""
    assert f'data-chart="data-{chart}"' in html, f"no {chart} chart"
    found = re.search(rf'<script type="application/json" id="data-{chart}">(.*?)</script>', html, re.S)
    assert found, chart
    return json.loads(found[1])


def api(client: TestClient, brand: Brand, metric: str, **params: Any) -> dict[str, Any]:
    response = client.get(f"/api/v1/analytics/{metric}", params=params, headers=brand.bearer)
    assert response.status_code == 200, response.text
    return response.json()


def same_cells(got: list[list[Any]], expected: list[list[Any]]) -> bool:
    """Equal rows; floats to 1e-9 (DuckDB's parallel sums may add in another order on another run)."""
    if len(got) != len(expected) or any(len(a) != len(b) for a, b in zip(got, expected, strict=True)):
        return False
    return all(
        a == pytest.approx(b, rel=1e-9) if isinstance(b, float) else a == b
        for row_a, row_b in zip(got, expected, strict=True)
        for a, b in zip(row_a, row_b, strict=True)
    )


def same_rows(page: dict[str, Any], rest: dict[str, Any]) -> None:
    """The page's chart JSON holds the API's answer: the same columns, rows and parameters."""
    assert page["result"]["columns"] == rest["columns"]
    assert rest["data"] and same_cells(page["result"]["data"], rest["data"]), (
        page["result"]["data"],
        rest["data"],
    )
    assert page["result"]["params"] == rest["params"]


def test_retention_lines_heatmap_and_churn_are_the_metrics(
    console: Console, client: TestClient, brand: Brand, analytics: Path
) -> None:
    page = console.get(f"/analytics/retention?start={START}&end={END}&days=1,7,14&period=week&periods=6")
    assert page.status_code == 200, page.text
    lines = chart_data(page.text, "retention")
    same_rows(lines, api(client, brand, "retention", start=START, end=END, days="1,7,14"))
    assert lines["result"]["chart"] == {"type": "line", "x": "cohort", "series": ["d1", "d7", "d14"]}
    assert lines["labels"]["d7"] == "Day 7"
    cohorts = chart_data(page.text, "cohorts")
    rest = api(client, brand, "cohort_retention", start=START, end=END, period="week", periods=6)
    same_rows(cohorts, rest)
    assert cohorts["result"]["chart"]["type"] == "heatmap"
    assert {row[1] for row in rest["data"]} == set(range(6))  # offsets 0..5 of the early cohorts
    churn = chart_data(page.text, "churn")
    same_rows(churn, api(client, brand, "churn_rate", start=START, end=END, period="week"))
    assert 'value="1,7,14"' in page.text  # the form keeps what was asked
    assert console.get("/analytics").status_code == 200  # the section's first tab


def test_funnel_of_the_typed_steps(
    console: Console, client: TestClient, brand: Brand, analytics: Path
) -> None:
    blank = console.get("/analytics/funnels")
    assert blank.status_code == 200 and "Type at least two event names" in blank.text
    assert '<option value="Order Completed">' in blank.text  # the known events are suggested
    assert "Secret Event" not in blank.text  # another workspace's event names are not
    steps = ["Product Viewed", "Product Added", "Order Completed"]
    query = "&".join(f"steps={s.replace(' ', '+')}" for s in steps)
    page = console.get(f"/analytics/funnels?start={START}&end={END}&window_days=90&{query}&steps=")
    assert page.status_code == 200, page.text
    funnel = chart_data(page.text, "funnel")
    rest = api(client, brand, "funnel", start=START, end=END, window_days=90, steps=steps)
    same_rows(funnel, rest)
    assert funnel["result"]["chart"] == {"type": "bar", "x": "event", "series": ["users"]}
    users = [row[2] for row in rest["data"]]
    assert users[0] == 40 and users[2] == 32  # every 5th visitor never orders
    table = page.text[page.text.index('id="funnel-table"') :]
    assert "80.0%" in table  # 32 of 40 ordered


def test_paths_after_an_event(console: Console, client: TestClient, brand: Brand, analytics: Path) -> None:
    page = console.get(
        f"/analytics/paths?start={START}&end={END}&event=Product+Added&direction=after&depth=2"
    )
    assert page.status_code == 200, page.text
    paths = chart_data(page.text, "paths")
    rest = api(
        client, brand, "paths", start=START, end=END, event="Product Added", direction="after", depth=2
    )
    same_rows(paths, rest)
    assert paths["result"]["chart"]["type"] == "sankey"
    assert rest["data"][0][1:] == ["Product Added", "Order Completed", 32]
    before = console.get(f"/analytics/paths?start={START}&end={END}&event=Order+Completed&direction=before")
    assert chart_data(before.text, "paths")["result"]["params"]["direction"] == "before"


def test_rfm_layers_grid_and_pie(console: Console, client: TestClient, brand: Brand, analytics: Path) -> None:
    page = console.get("/analytics/rfm")
    assert page.status_code == 200, page.text
    rest = client.get("/api/v1/analytics/rfm", headers=brand.bearer).json()
    pie = chart_data(page.text, "layers")
    assert pie["result"]["data"] == rest["data"] and pie["result"]["chart"] == rest["chart"]
    assert sum(users for _layer, users in rest["data"]) == 40
    assert pie["labels"]["high_value"] == "High value"
    for layer, users in rest["data"]:
        card = re.search(rf'id="layer-{layer}".*?<div class="value">([^<]+)</div>', page.text, re.S)
        assert card and card[1] == str(users), layer


def test_customer_value_histogram_and_churn_risk(
    console_as: Callable[..., Console], client: TestClient, brand: Brand, analytics: Path
) -> None:
    analyst = console_as("analyst")
    page = analyst.get(f"/analytics/value?as_of={AS_OF}&months=6")
    assert page.status_code == 200, page.text
    with store(analytics) as con:
        values, _ = customer_value(con, brand.workspace_id, as_of=date.fromisoformat(AS_OF), months=6)
    histogram = chart_data(page.text, "clv")["result"]
    expected = value_distribution(values["clv"])
    assert [row[1] for row in histogram["data"]] == expected["customers"].tolist()
    assert [row[2] for row in histogram["data"]] == pytest.approx(expected["low"].tolist())
    assert sum(row[1] for row in histogram["data"]) == len(values) == 32  # every customer with orders
    risky = at_risk_customers(values)
    assert 0 < len(risky) < 32
    listed = re.findall(r'<a href="/customers/(\d+)">([^<]+)</a>', page.text)
    assert [int(pid) for pid, _ in listed] == [int(v) for v in risky["user_id"]][:25]
    assert all(re.fullmatch(r"c\d\d", user) for _, user in listed)  # the customers' own ids
    export = analyst.get(f"/analytics/value/churn-risk.csv?as_of={AS_OF}&months=6")
    assert export.status_code == 200 and export.headers["content-type"].startswith("text/csv")
    assert "attachment" in export.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(export.text)))
    assert [int(r["profile_id"]) for r in rows] == [int(v) for v in risky["user_id"]]
    assert [r["user_id"] for r in rows[: len(listed)]] == [user for _, user in listed]
    assert all(r["risk_reason"] for r in rows)
    assert 'id="export-churn-risk"' in page.text


def test_viewers_read_but_may_not_export_and_the_pages_speak_taiwanese(
    console_as: Callable[..., Console], client: TestClient, brand: Brand, analytics: Path
) -> None:
    viewer = console_as("viewer", locale="zh-TW")
    page = viewer.get(f"/analytics/value?as_of={AS_OF}&months=6")
    assert page.status_code == 200, page.text
    assert "流失風險最高" in page.text and "分析" in page.text
    assert chart_data(page.text, "clv")["labels"]["customers"] == "客戶"
    assert 'id="export-churn-risk"' not in page.text  # hidden from a viewer…
    refused = viewer.get(f"/analytics/value/churn-risk.csv?as_of={AS_OF}")
    assert refused.status_code == 403 and "text/html" in refused.headers["content-type"]  # …and refused
    retention = viewer.get(f"/analytics/retention?start={START}&end={END}&days=1,7")
    assert retention.status_code == 200 and "留存" in retention.text
    assert chart_data(retention.text, "retention")["labels"]["d7"] == "第 7 天"
    rfm = viewer.get("/analytics/rfm")
    assert "高價值" in rfm.text and chart_data(rfm.text, "layers")["labels"]["high_value"] == "高價值"
    revenue = viewer.get(f"/analytics/revenue?start={START}&end={END}")
    assert "頻道投資報酬率" in revenue.text
    bad = viewer.get("/analytics/funnels?steps=Product+Viewed&steps=Nope")
    assert bad.status_code == 400 and "此工作區從未記錄名為「Nope」的事件" in bad.text


def test_revenue_arpu_and_channel_roi(
    console: Console, client: TestClient, brand: Brand, analytics: Path
) -> None:
    page = console.get(f"/analytics/revenue?start={START}&end={END}&interval=month")
    assert page.status_code == 200, page.text
    rest = api(client, brand, "revenue", start=START, end=END, interval="month")
    same_rows(chart_data(page.text, "arpu"), rest)
    bars = chart_data(page.text, "revenue")["result"]
    assert same_cells(bars["data"], rest["data"]) and bars["chart"] == {
        "type": "bar",
        "x": "period",
        "series": ["revenue"],
    }
    assert sum(row[4] for row in rest["data"]) > 0
    roi_rest = api(client, brand, "channel_roi", start=START, end=END)
    same_rows(chart_data(page.text, "roi"), roi_rest)
    roi = {row[0]: dict(zip(roi_rest["columns"], row, strict=True)) for row in roi_rest["data"]}
    assert set(roi) == set(CHANNELS) and roi["line"]["cost"] == 300.0 and roi["wecom"]["cost"] == 0
    table = page.text[page.text.index('id="roi-table"') :]
    for channel in CHANNELS:
        assert f"<td>{channel}</td>" in table


BAD = [
    ("/analytics/retention?start=yesterday&end=2024-05-31", "start"),
    ("/analytics/retention?start=2024-05-31&end=2024-03-01", "end must not be before start"),
    ("/analytics/retention?start=2024-03-01&end=2024-05-31&days=0", "days"),
    ("/analytics/retention?period=year", "period"),
    ("/analytics/funnels?steps=Product+Viewed", "steps"),
    ("/analytics/funnels?steps=Product+Viewed&steps=Secret+Event", "No event named “Secret Event”"),
    ("/analytics/funnels?steps=Product+Viewed&steps=Order+Completed&window_days=0", "window_days"),
    ("/analytics/paths?event=Nope", "No event named “Nope”"),
    ("/analytics/paths?event=Product+Viewed&depth=11", "depth"),
    ("/analytics/value?as_of=31/05/2024", "“As of” must be a date"),
    ("/analytics/value?months=0", "between 1 and 120 months"),
    ("/analytics/revenue?interval=hour", "interval"),
    ("/analytics/revenue?end=2024-13-01", "end"),
]


@pytest.mark.parametrize(
    ("url", "reason"), BAD, ids=[u.split("?")[0] + "-" + str(i) for i, (u, _) in enumerate(BAD)]
)
def test_bad_parameters_are_refused_inline(console: Console, analytics: Path, url: str, reason: str) -> None:
    page = console.get(url)
    assert page.status_code == 400, page.text
    error = re.search(r'<p class="flash error" id="form-error" role="alert">(.*?)</p>', page.text, re.S)
    assert error and reason in error[1], page.text
    assert "<form" in page.text and "data-chart" not in page.text  # the form stays, nothing ran


def test_before_any_sync_the_pages_say_there_is_no_data_yet(console: Console) -> None:
    for url in (
        "/analytics/retention",
        "/analytics/funnels?steps=Product+Viewed&steps=Order+Completed",
        "/analytics/paths?event=Product+Viewed",
        "/analytics/rfm",
        "/analytics/value",
        "/analytics/revenue",
    ):
        page = console.get(url)
        assert page.status_code == 200, (url, page.text)
        assert "data-chart" not in page.text, url
        assert (
            "No data yet" in page.text
            or "No RFM scoring yet" in page.text
            or "Not enough orders" in page.text
        )
