"""The coupons REST API and CLI: templates, issue and redeem with idempotency keys, a customer's coupons,
refusals with their reasons (changing nothing), and an order through the real ingest API."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from fastapi.testclient import TestClient

from lifeloop.config import Settings
from lifeloop.engagement.coupons.service import issue_coupon
from lifeloop.profiles.resolver import resolve_pending
from lifeloop.store.schema import utcnow
from lifeloop.workspaces.service import create_api_token
from tests.cli_helpers import run_cli
from tests.conftest import Brand, make_brand, snapshot

from .test_coupons import programme_events

DAY7 = {"key": "day7", "name": "Day-7 second purchase", "kind": "threshold", "value": 100, "threshold": 500}


def identify(client: TestClient, brand: Brand, *users: str) -> dict[str, int]:
    batch = [{"type": "identify", "userId": u, "messageId": f"id-{u}"} for u in users]
    assert client.post("/v1/batch", json={"batch": batch}, auth=brand.auth).status_code == 200
    resolve_pending(client.app.state.engine)  # type: ignore[attr-defined]
    found = {}
    for user in users:
        answer = client.get(f"/api/v1/profiles/lookup?identity=user_id:{user}", headers=brand.bearer)
        found[user] = answer.json()["id"]
    return found


def test_templates_issue_redeem_and_a_customers_coupons(
    client: TestClient, engine: sa.Engine, brand: Brand
) -> None:
    h = brand.bearer
    ids = identify(client, brand, "ann")
    made = client.post(
        "/api/v1/coupons/templates", json={**DAY7, "valid_days": 7, "per_user_limit": 1}, headers=h
    )
    assert made.status_code == 201, made.text
    assert made.json()["kind"] == "threshold" and made.json()["status"] == "active"
    assert [t["key"] for t in client.get("/api/v1/coupons/templates", headers=h).json()] == ["day7"]
    changed = client.patch("/api/v1/coupons/templates/day7", json={"valid_days": 10}, headers=h)
    assert changed.status_code == 200 and changed.json()["valid_days"] == 10
    assert client.get("/api/v1/coupons/templates/day7", headers=h).json()["valid_days"] == 10

    # Issue by user id; the retry with the same key is the same coupon and stores nothing.
    body = {"template": "day7", "user_id": "ann"}
    first = client.post("/api/v1/coupons/issue", json=body, headers={**h, "Idempotency-Key": "day7:ann"})
    assert first.status_code == 200, first.text
    coupon = first.json()
    assert coupon["profile_id"] == ids["ann"] and coupon["status"] == "issued"
    before = snapshot(engine)
    again = client.post("/api/v1/coupons/issue", json=body, headers={**h, "Idempotency-Key": "day7:ann"})
    assert again.status_code == 200 and again.json() == coupon
    assert snapshot(engine) == before

    mine = client.get(f"/api/v1/coupons?profile_id={ids['ann']}", headers=h).json()
    assert [c["code"] for c in mine] == [coupon["code"]]
    assert client.get("/api/v1/coupons?user_id=ann", headers=h).json() == mine

    # Redeem; the retry answers with the first redemption and stores nothing.
    pay = {"code": coupon["code"], "user_id": "ann", "order_id": "A-1", "order_total": 650}
    redeemed = client.post("/api/v1/coupons/redeem", json=pay, headers={**h, "Idempotency-Key": "pay-A-1"})
    assert redeemed.status_code == 200, redeemed.text
    assert redeemed.json()["discount"] == 100 and redeemed.json()["coupon"]["status"] == "redeemed"
    before = snapshot(engine)
    retried = client.post("/api/v1/coupons/redeem", json=pay, headers={**h, "Idempotency-Key": "pay-A-1"})
    assert retried.status_code == 200 and retried.json() == redeemed.json()
    assert snapshot(engine) == before
    assert len(programme_events(engine, brand, "Coupon Redeemed")) == 1

    archived = client.post("/api/v1/coupons/templates/day7/archive", headers=h)
    assert archived.status_code == 200 and archived.json()["status"] == "archived"


def test_refusals_answer_4xx_with_a_reason_and_change_nothing(
    client: TestClient, engine: sa.Engine, brand: Brand
) -> None:
    h = brand.bearer
    ids = identify(client, brand, "ann", "bob")
    assert (
        client.post("/api/v1/coupons/templates", json={**DAY7, "per_user_limit": 1}, headers=h).status_code
        == 201
    )
    short = {"key": "short", "kind": "fixed", "value": 10, "valid_days": 1}
    assert client.post("/api/v1/coupons/templates", json=short, headers=h).status_code == 201
    coupon = client.post(
        "/api/v1/coupons/issue",
        json={"template": "day7", "user_id": "ann"},
        headers={**h, "Idempotency-Key": "1"},
    ).json()
    with engine.begin() as conn:  # issued three days ago: expired by now
        old = issue_coupon(
            conn, brand.workspace_id, ids["ann"], "short", key="old", now=utcnow() - timedelta(days=3)
        )
    used = client.post(
        "/api/v1/coupons/redeem",
        json={"code": coupon["code"], "user_id": "ann", "order_total": 500},
        headers={**h, "Idempotency-Key": "used"},
    )
    assert used.status_code == 200
    with engine.begin() as conn:
        _token, analyst = create_api_token(conn, brand.workspace_id, name="a", role="analyst")
    other = make_brand(engine, "other")

    before = snapshot(engine)
    issue = "/api/v1/coupons/issue"
    redeem = "/api/v1/coupons/redeem"
    cases = [
        (issue, {"template": "day7", "user_id": "ann"}, "k1", 409, "coupon_limit_reached", "at most 1 each"),
        (issue, {"template": "nope", "user_id": "ann"}, "k2", 404, "not_found", "no coupon template"),
        (issue, {"template": "day7", "user_id": "nobody"}, "k3", 404, "not_found", "no profile"),
        (issue, {"template": "day7"}, "k4", 400, "invalid_input", "profile_id or by user_id"),
        (issue, {"template": "day7", "user_id": "bob"}, None, 400, "invalid_input", "Idempotency-Key"),
        (redeem, {"code": coupon["code"], "user_id": "ann", "order_total": 900}, "k5", 409,
         "coupon_redeemed", "already redeemed"),
        (redeem, {"code": old.code, "user_id": "ann"}, "k6", 409, "coupon_expired", "expired"),
        (redeem, {"code": "ZZZZ-ZZZZ-ZZZZ", "user_id": "ann"}, "k7", 404, "not_found", "holds no coupon"),
        (redeem, {"code": coupon["code"], "user_id": "bob"}, "k8", 404, "not_found", "holds no coupon"),
        (redeem, {"code": old.code, "user_id": "ann", "order_total": "many"}, "k9", 400, "invalid_input",
         "order_total"),
    ]  # fmt: skip
    for url, body, key, status, code, reason in cases:
        headers = {**h, "Idempotency-Key": key} if key else h
        answer = client.post(url, json=body, headers=headers)
        assert (answer.status_code, answer.json()["code"]) == (status, code), (body, answer.text)
        assert reason in answer.json()["message"], answer.text
    bad_templates: list[tuple[dict[str, Any], str]] = [
        ({**DAY7, "key": "t2", "threshold": None}, "threshold"),
        ({"key": "t3", "kind": "percent", "value": 150}, "value"),
        ({"key": "t4", "kind": "gift"}, "gift"),
        ({"key": "day7", "kind": "fixed", "value": 1}, "key"),
        ({"key": "t5", "kind": "fixed", "value": 1, "valid_days": 2,
          "valid_from": "2026-12-01T00:00:00+08:00"}, "valid_days"),
    ]  # fmt: skip
    for body, field in bad_templates:
        answer = client.post("/api/v1/coupons/templates", json=body, headers=h)
        assert 400 <= answer.status_code < 500 and answer.json()["field"] == field, answer.text
    assert (
        client.patch("/api/v1/coupons/templates/day7", json={"total_limit": 0}, headers=h).status_code == 400
    )
    assert client.get("/api/v1/coupons/templates/nope", headers=h).status_code == 404

    # Readers may look, not issue; another workspace sees none of this one's customers.
    as_analyst = {"Authorization": f"Bearer {analyst}", "Idempotency-Key": "k10"}
    assert (
        client.post(issue, json={"template": "day7", "user_id": "bob"}, headers=as_analyst).status_code == 403
    )
    assert client.get("/api/v1/coupons?user_id=ann", headers=as_analyst).status_code == 200
    assert client.get(f"/api/v1/coupons?profile_id={ids['ann']}", headers=other.bearer).status_code == 404
    assert client.get("/api/v1/coupons/templates/day7", headers=other.bearer).status_code == 404
    assert snapshot(engine) == before


def test_an_order_through_the_ingest_api_redeems_its_coupon(
    client: TestClient, engine: sa.Engine, brand: Brand
) -> None:
    h = brand.bearer
    identify(client, brand, "ann")
    shared = {"key": "xmas", "kind": "percent", "value": 10, "max_discount": 80, "code_mode": "shared",
              "shared_code": "XMAS10"}  # fmt: skip
    assert client.post("/api/v1/coupons/templates", json=shared, headers=h).status_code == 201
    issued = client.post(
        "/api/v1/coupons/issue",
        json={"template": "xmas", "user_id": "ann"},
        headers={**h, "Idempotency-Key": "x"},
    )
    assert issued.json()["code"] == "XMAS10"
    order = {
        "userId": "ann",
        "event": "Order Completed",
        "messageId": "order-77",
        "properties": {"order_id": "77", "total": 1200, "revenue": 1100, "discount": 0, "coupon": "xmas10"},
    }
    assert client.post("/v1/track", json=order, auth=brand.auth).status_code == 200
    resolve_pending(engine)
    (event,) = programme_events(engine, brand, "Coupon Redeemed")
    assert event.properties["order_id"] == "77" and event.properties["discount"] == 80  # 10 % of 1200, capped
    assert client.get("/api/v1/coupons?user_id=ann", headers=h).json()[0]["status"] == "redeemed"


def test_the_cli_makes_issues_redeems_and_lists(settings: Settings, client: TestClient, brand: Brand) -> None:
    url = settings.database_url
    identify(client, brand, "ann")
    made = run_cli(
        ["coupons", "template", "create", "welcome", "-w", "acme", "--kind", "fixed", "--value", "50",
         "--valid-days", "7", "--per-user-limit", "1"],
        url,
    )  # fmt: skip
    assert made.exit_code == 0, made.output
    listed = run_cli(["coupons", "template", "list", "-w", "acme", "--json"], url)
    assert [t["key"] for t in json.loads(listed.stdout)] == ["welcome"]

    issue = [
        "coupons",
        "issue",
        "welcome",
        "-w",
        "acme",
        "--user-id",
        "ann",
        "--key",
        "welcome:ann",
        "--json",
    ]
    first = run_cli(issue, url)
    assert first.exit_code == 0, first.output
    again = run_cli(issue, url)
    assert json.loads(again.stdout) == json.loads(first.stdout)
    code = json.loads(first.stdout)["code"]

    redeem = [
        "coupons",
        "redeem",
        code,
        "-w",
        "acme",
        "--user-id",
        "ann",
        "--key",
        "pay-1",
        "--order-total",
        "80",
    ]
    done = run_cli(redeem, url)
    assert done.exit_code == 0 and "50 off" in done.output, done.output
    assert run_cli(redeem, url).exit_code == 0  # the same key: the same redemption, no refusal
    shown = run_cli(["coupons", "list", "-w", "acme", "--user-id", "ann", "--json"], url)
    assert [c["status"] for c in json.loads(shown.stdout)] == ["redeemed"]

    refused = run_cli([*redeem[:-4], "--key", "pay-2"], url)
    assert refused.exit_code != 0 and "already redeemed" in refused.output
    limit = run_cli([*issue[:-3], "--key", "welcome:ann:2"], url)
    assert limit.exit_code != 0 and "at most 1 each" in limit.output
    unknown = run_cli(["coupons", "issue", "nope", "-w", "acme", "--user-id", "ann", "--key", "k"], url)
    assert unknown.exit_code != 0 and "no coupon template 'nope'" in unknown.output
    bad = run_cli(
        ["coupons", "template", "create", "t", "-w", "acme", "--kind", "percent", "--value", "120"], url
    )
    assert bad.exit_code != 0 and "less than 100" in bad.output
    assert "Traceback" not in refused.output + limit.output + unknown.output + bad.output
