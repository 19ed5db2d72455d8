"""Console engagement pages: coupon templates, points, check-in and new-user tasks, member tiers, referrals,
advisors and their task lists, and the customer page's engagement panel. Each write made in the console is
read back through the REST API; viewers and analysts are refused (403) and store nothing; bad input is
shown beside its form with a 4xx and changes nothing."""

from __future__ import annotations

import re
from collections.abc import Callable
from html import unescape
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from lifeloop.profiles.resolver import resolve_pending
from tests.conftest import Brand, make_brand, snapshot
from tests.web.console.conftest import Console

PAGES = [
    "/engagement",
    "/engagement/points",
    "/engagement/checkin",
    "/engagement/tiers",
    "/engagement/referrals",
    "/engagement/advisors",
]
LADDER = """
window_days: 365
tiers:
  - {key: member, name: 一般會員}
  - {key: silver, name: 銀卡, min_spend: 1000, points_multiplier: 1.2, benefits: [免運]}
  - {key: gold, name: 金卡, min_spend: 10000}
member_day: {day: 8, points_multiplier: 2}
"""


def customer(client: TestClient, engine: sa.Engine, brand: Brand, user_id: str, *orders: float) -> int:
    """A customer identified through /v1/batch, with their orders, placed by identity resolution."""
    batch: list[dict[str, Any]] = [
        {"type": "identify", "userId": user_id, "traits": {"name": f"客人 {user_id}"}}
    ]
    batch += [
        {
            "type": "track",
            "userId": user_id,
            "event": "Order Completed",
            "messageId": f"{user_id}-o{i}",
            "properties": {"order_id": f"{user_id}-{i}", "revenue": amount},
        }
        for i, amount in enumerate(orders)
    ]
    answer = client.post("/v1/batch", json={"batch": batch}, auth=brand.auth)
    assert answer.status_code == 200, answer.text
    resolve_pending(engine)
    found = client.get(
        "/api/v1/profiles/lookup", params={"identity": f"user_id:{user_id}"}, headers=brand.bearer
    )
    return int(found.json()["id"])


def form_value(html: str, form_id: str, name: str) -> str:
    """A hidden field of one form on the page (such as its idempotency key)."""
    form = re.search(rf'<form[^>]*id="{form_id}".*?</form>', html, re.S)
    assert form, f"no form {form_id}"
    value = re.search(rf'name="{name}" value="([^"]*)"', form[0])
    assert value, f"no {name} in {form_id}"
    return value[1]


def api(client: TestClient, brand: Brand, path: str, **params: Any) -> Any:
    answer = client.get(path, params=params, headers=brand.bearer)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_every_engagement_page_renders_for_admin_and_viewer(
    console_as: Callable[..., Console], client: TestClient, engine: sa.Engine, brand: Brand
) -> None:
    admin = console_as("admin")
    admin.post("/engagement/tiers", {"config": LADDER})
    pid = customer(client, engine, brand, "mei", 1200)  # an order after the ladder: silver at once
    admin.post(
        "/engagement/coupons", {"key": "welcome", "name": "新人禮 100", "kind": "fixed", "value": "100"}
    )
    admin.post("/engagement/advisors", {"name": "李四", "wecom_userid": "lisi", "key": "k1"})
    for role in ("admin", "viewer"):
        member = console_as(role)
        for path in PAGES:
            page = member.get(path)
            assert page.status_code == 200, (role, path, page.text)
            assert 'id="engagement-tabs"' in page.text
        advisor_id = api(client, brand, "/api/v1/advisors")[0]["id"]
        assert member.get(f"/engagement/advisors/{advisor_id}").status_code == 200
        forms = member.get("/engagement").text
        assert ('id="create-template"' in forms) is (role == "admin")  # viewers see, operators change
        assert "新人禮 100" in forms
    tiers = console_as("viewer").get("/engagement/tiers").text
    assert re.search(r'data-tier="silver".*?class="num members">1<', tiers, re.S)  # mei spent 1,200
    assert re.search(r'data-tier="member".*?class="num members">0<', tiers, re.S)
    assert "day 8 of each month" in tiers
    assert pid


def test_coupon_templates_created_issued_and_archived_in_the_console_are_the_apis(
    console: Console, client: TestClient, engine: sa.Engine, brand: Brand
) -> None:
    pid = customer(client, engine, brand, "mei")
    made = console.post(
        "/engagement/coupons",
        {
            "key": "day7",
            "name": "第二件 滿500減100",
            "kind": "threshold",
            "value": "100",
            "threshold": "500",
            "valid_days": "7",
            "per_user_limit": "1",
        },
        follow_redirects=False,
    )
    assert made.status_code == 303, made.text
    template = api(client, brand, "/api/v1/coupons/templates/day7")
    assert template["kind"] == "threshold" and template["valid_days"] == 7 and template["per_user_limit"] == 1

    form = console.get("/engagement").text
    key = form_value(form, "issue-coupon", "key")
    issued = console.post(
        "/engagement/coupons/issue",
        {"template": "day7", "customer": "user_id:mei", "key": key},
        follow_redirects=False,
    )
    assert issued.status_code == 303
    again = console.post(
        "/engagement/coupons/issue", {"template": "day7", "customer": "user_id:mei", "key": key}
    )
    assert again.status_code == 200  # the same form sent twice: the first coupon, nothing more
    held = api(client, brand, "/api/v1/coupons", profile_id=pid)
    assert [c["template"] for c in held] == ["day7"] and held[0]["source"] == "console"
    code = held[0]["code"]
    redeemed = client.post(
        "/api/v1/coupons/redeem",
        headers={**brand.bearer, "Idempotency-Key": "r1"},
        json={"code": code, "profile_id": pid, "order_total": 650},
    )
    assert redeemed.status_code == 200, redeemed.text
    listed = console.get("/engagement").text
    assert re.search(r'data-template="day7".*?class="num issued">1<.*?class="num redeemed">1<', listed, re.S)

    # A second coupon for mei breaks the per-customer limit: refused beside the form, nothing issued.
    fresh_key = form_value(listed, "issue-coupon", "key")
    assert fresh_key != key
    refused = console.post(
        "/engagement/coupons/issue", {"template": "day7", "customer": str(pid), "key": fresh_key}
    )
    assert refused.status_code == 409 and 'id="issue-error"' in refused.text
    assert len(api(client, brand, "/api/v1/coupons", profile_id=pid)) == 1

    archived = console.post("/engagement/coupons/day7/archive", follow_redirects=False)
    assert archived.status_code == 303
    assert api(client, brand, "/api/v1/coupons/templates/day7")["status"] == "archived"


def test_bad_coupon_templates_are_refused_beside_the_form(
    console: Console, client: TestClient, engine: sa.Engine, brand: Brand
) -> None:
    before = snapshot(engine)
    no_threshold = console.post("/engagement/coupons", {"key": "mj", "kind": "threshold", "value": "100"})
    assert no_threshold.status_code == 400 and 'id="create-error"' in no_threshold.text
    assert 'value="mj"' in no_threshold.text  # what was typed stays in the form
    not_a_number = console.post(
        "/engagement/coupons", {"key": "x", "kind": "fixed", "value": "10", "valid_days": "a"}
    )
    assert not_a_number.status_code == 400 and "valid_days must be a whole number" in not_a_number.text
    nobody = console.post(
        "/engagement/coupons/issue", {"template": "x", "customer": "user_id:nobody", "key": "k"}
    )
    assert nobody.status_code == 404 and 'id="issue-error"' in nobody.text
    assert snapshot(engine) == before
    assert api(client, brand, "/api/v1/coupons/templates") == []


def test_points_awarded_and_spent_in_the_console_are_in_the_ledger(
    console: Console, client: TestClient, engine: sa.Engine, brand: Brand
) -> None:
    pid = customer(client, engine, brand, "mei")
    looked = console.get("/engagement/points", params={"customer": "user_id:mei"})
    assert looked.status_code == 200 and 'id="balance">0<' in looked.text
    key = form_value(looked.text, "award-points", "key")
    awarded = console.post(
        "/engagement/points/award",
        {"customer": str(pid), "points": "120", "reason": "客訴補償", "key": key},
        follow_redirects=False,
    )
    assert (
        awarded.status_code == 303
        and awarded.headers["location"] == f"/engagement/points?customer={pid}&done=awarded"
    )
    console.post(
        "/engagement/points/award", {"customer": str(pid), "points": "120", "reason": "客訴補償", "key": key}
    )
    assert api(client, brand, f"/api/v1/points/profiles/{pid}")["balance"] == 120  # the resent form: once

    page = console.get(f"/engagement/points?customer={pid}").text
    spend_key = form_value(page, "spend-points", "key")
    spent = console.post(
        "/engagement/points/spend",
        {"customer": str(pid), "points": "20", "reason": "兌換茶包", "key": spend_key},
        follow_redirects=False,
    )
    assert spent.status_code == 303
    history = api(client, brand, f"/api/v1/points/profiles/{pid}/history")["items"]
    assert [(e["kind"], e["points"], e["reason"]) for e in history] == [
        ("spend", 20, "兌換茶包"),
        ("earn", 120, "客訴補償"),
    ]
    shown = console.get(f"/engagement/points?customer={pid}").text
    assert 'id="balance">100<' in shown and "兌換茶包" in shown

    short = console.post(
        "/engagement/points/spend",
        {
            "customer": str(pid),
            "points": "500",
            "reason": "x",
            "key": form_value(shown, "spend-points", "key"),
        },
    )
    assert short.status_code == 409 and 'id="spend-error"' in short.text
    zero = console.post(
        "/engagement/points/award", {"customer": str(pid), "points": "zero", "reason": "x", "key": "z"}
    )
    assert zero.status_code == 400 and 'id="award-error"' in zero.text
    assert api(client, brand, f"/api/v1/points/profiles/{pid}")["balance"] == 100
    unknown = console.get("/engagement/points", params={"customer": "user_id:nobody"})
    assert unknown.status_code == 404 and 'id="lookup-error"' in unknown.text


def test_points_rules_check_in_and_task_settings_saved_in_the_console(
    console: Console, client: TestClient, brand: Brand
) -> None:
    saved = console.post(
        "/engagement/points/rules",
        {"rules": "order: {rate: 0.1}\ncheckin: {points: 3}\n"},
        follow_redirects=False,
    )
    assert saved.status_code == 303
    rules = api(client, brand, "/api/v1/points/rules")
    assert rules["order"]["rate"] == 0.1 and rules["checkin"]["points"] == 3
    assert "0.1 points per 1 spent on Order Completed" in console.get("/engagement/points").text

    checkin = console.post(
        "/engagement/checkin/checkin",
        {"settings": "streak_rewards: {3: 15, 7: 40}\nmakeup_cost: 30\n"},
        follow_redirects=False,
    )
    assert checkin.status_code == 303
    config = api(client, brand, "/api/v1/checkins/config")
    assert config["makeup_cost"] == 30 and {str(k): v for k, v in config["streak_rewards"].items()} == {
        "3": 15,
        "7": 40,
    }
    tasks = console.post(
        "/engagement/checkin/tasks",
        {"settings": "rewards: {browse: 0, follow: 50}\n"},
        follow_redirects=False,
    )
    assert tasks.status_code == 303
    assert api(client, brand, "/api/v1/points/tasks")["rewards"]["follow"] == 50
    page = console.get("/engagement/checkin").text
    assert "day 3: +15" in page and "50" in page

    broken = console.post("/engagement/checkin/checkin", {"settings": "makeup_cost: [1"})
    assert (
        broken.status_code == 400 and 'id="checkin-error"' in broken.text and "makeup_cost: [1" in broken.text
    )
    wrong = console.post("/engagement/points/rules", {"rules": "order: {rate: -1}"})
    assert wrong.status_code == 400 and 'id="rules-error"' in wrong.text
    assert api(client, brand, "/api/v1/points/rules")["order"]["rate"] == 0.1
    assert api(client, brand, "/api/v1/checkins/config")["makeup_cost"] == 30


def test_the_tier_ladder_and_referral_programme_saved_in_the_console(
    console: Console, client: TestClient, engine: sa.Engine, brand: Brand
) -> None:
    assert 'id="no-ladder"' in console.get("/engagement/tiers").text
    saved = console.post("/engagement/tiers", {"config": LADDER}, follow_redirects=False)
    assert saved.status_code == 303
    program = api(client, brand, "/api/v1/tiers/program")
    assert [t["key"] for t in program["tiers"]] == ["member", "silver", "gold"]
    assert program["member_day"]["day"] == 8
    customer(client, engine, brand, "big", 12000)
    assert re.search(
        r'data-tier="gold".*?class="num members">1<', console.get("/engagement/tiers").text, re.S
    )
    bad = console.post("/engagement/tiers", {"config": "tiers: []"})
    assert bad.status_code == 400 and 'id="config-error"' in bad.text
    assert len(api(client, brand, "/api/v1/tiers/program")["tiers"]) == 3

    assert 'id="no-program"' in console.get("/engagement/referrals").text
    referral = "landing_url: https://shop.example.com/welcome\nreferrer_reward: {points: 200}\n"
    assert (
        console.post("/engagement/referrals", {"config": referral}, follow_redirects=False).status_code == 303
    )
    assert api(client, brand, "/api/v1/referrals/program")["referrer_reward"]["points"] == 200
    page = console.get("/engagement/referrals?days=90").text
    assert "https://shop.example.com/welcome" in page and 'id="no-referrers"' in page
    wrong = console.post("/engagement/referrals", {"config": "landing_url: not a url"})
    assert wrong.status_code == 400 and 'id="config-error"' in wrong.text


def test_advisors_rules_and_a_task_marked_done_with_its_outcome(
    console: Console, client: TestClient, engine: sa.Engine, brand: Brand
) -> None:
    added = console.post(
        "/engagement/advisors",
        {
            "name": "李四",
            "wecom_userid": "lisi",
            "store": "taipei-101",
            "channels": ["line", "store"],
            "capacity": "200",
            "key": "a1",
        },
        follow_redirects=False,
    )
    assert added.status_code == 303
    [advisor] = api(client, brand, "/api/v1/advisors")
    assert (
        advisor["wecom_userid"] == "lisi"
        and advisor["channels"] == ["line", "store"]
        and advisor["capacity"] == 200
    )
    rule = console.post(
        "/engagement/advisors/rules",
        {"key": "by-store", "method": "store", "config": "trait: store"},
        follow_redirects=False,
    )
    assert rule.status_code == 303
    assert api(client, brand, "/api/v1/advisors/assignment-rules")[0]["config"] == {"trait": "store"}
    others = {"key": "others", "method": "round_robin", "position": "9"}  # a customer without a store trait
    assert console.post("/engagement/advisors/rules", others, follow_redirects=False).status_code == 303
    rules = api(client, brand, "/api/v1/advisors/assignment-rules")
    assert [(r["key"], r["method"]) for r in rules] == [("by-store", "store"), ("others", "round_robin")]
    task_rule = console.post(
        "/engagement/advisors/task-rules",
        {
            "key": "vip",
            "event": "Tag Added",
            "where": "{tag: vip}",
            "title": "VIP 1v1：{{ customer.name }}",
            "due_hours": "24",
        },
        follow_redirects=False,
    )
    assert task_rule.status_code == 303
    assert api(client, brand, "/api/v1/advisors/task-rules")[0]["where"] == {"tag": "vip"}

    pid = customer(client, engine, brand, "mei")
    made = client.post(
        "/api/v1/advisors/tasks",
        headers={**brand.bearer, "Idempotency-Key": "t1"},
        json={"profile_id": pid, "title": "回訪新品"},
    )
    assert made.status_code == 201, made.text
    task_id = made.json()["id"]
    listed = console.get(f"/engagement/advisors/{advisor['id']}").text
    assert f'data-task="{task_id}"' in listed and "回訪新品" in listed and "客人 mei" in listed
    assert 'id="advisor"' in console.get(f"/customers/{pid}").text

    no_outcome = console.post(f"/engagement/advisors/tasks/{task_id}", {"status": "done", "note": "打過了"})
    assert no_outcome.status_code == 400 and 'id="task-error"' in no_outcome.text
    assert api(client, brand, f"/api/v1/advisors/tasks/{task_id}")["status"] == "open"
    done = console.post(
        f"/engagement/advisors/tasks/{task_id}",
        {"status": "done", "outcome": "purchased", "note": "買了桂花烏龍"},
        follow_redirects=False,
    )
    assert done.status_code == 303
    task = api(client, brand, f"/api/v1/advisors/tasks/{task_id}")
    assert (task["status"], task["outcome"], task["outcome_note"]) == ("done", "purchased", "買了桂花烏龍")
    again = console.post(f"/engagement/advisors/tasks/{task_id}", {"status": "cancelled"})
    assert again.status_code == 409 and "already done" in unescape(again.text)

    duplicate = console.post("/engagement/advisors", {"name": "王五", "wecom_userid": "lisi", "key": "a2"})
    assert duplicate.status_code == 409 and 'id="advisor-error"' in duplicate.text
    bad_rule = console.post("/engagement/advisors/rules", {"key": "x", "method": "astrology"})
    assert bad_rule.status_code == 400 and 'id="rule-error"' in bad_rule.text
    assert len(api(client, brand, "/api/v1/advisors")) == 1


WRITES: list[tuple[str, dict[str, Any]]] = [
    ("/engagement/coupons", {"key": "welcome", "kind": "fixed", "value": "100"}),
    ("/engagement/coupons/welcome/archive", {}),
    ("/engagement/coupons/issue", {"template": "welcome", "customer": "user_id:mei", "key": "k"}),
    ("/engagement/points/rules", {"rules": "checkin: {points: 9}"}),
    ("/engagement/points/award", {"customer": "user_id:mei", "points": "10", "reason": "x", "key": "k"}),
    ("/engagement/points/spend", {"customer": "user_id:mei", "points": "1", "reason": "x", "key": "k2"}),
    ("/engagement/checkin/checkin", {"settings": "makeup_cost: 1"}),
    ("/engagement/checkin/tasks", {"settings": "window_days: 3"}),
    ("/engagement/tiers", {"config": LADDER}),
    ("/engagement/referrals", {"config": "landing_url: https://shop.example.com/"}),
    ("/engagement/advisors", {"name": "李四", "wecom_userid": "lisi2", "key": "k"}),
    ("/engagement/advisors/rules", {"key": "rr", "method": "round_robin"}),
    ("/engagement/advisors/task-rules", {"key": "t", "event": "Tag Added", "title": "x"}),
    ("/engagement/advisors/tasks/{task}", {"status": "done", "outcome": "reached"}),
]


@pytest.mark.parametrize("role", ["viewer", "analyst"])
def test_viewers_and_analysts_are_refused_every_engagement_write(
    console_as: Callable[..., Console], client: TestClient, engine: sa.Engine, brand: Brand, role: str
) -> None:
    admin = console_as("admin")
    pid = customer(client, engine, brand, "mei")
    admin.post("/engagement/coupons", {"key": "welcome", "kind": "fixed", "value": "100"})
    admin.post("/engagement/advisors", {"name": "李四", "wecom_userid": "lisi", "key": "a"})
    task = client.post(
        "/api/v1/advisors/tasks",
        headers={**brand.bearer, "Idempotency-Key": "t"},
        json={"profile_id": pid, "title": "回訪"},
    ).json()["id"]
    member = console_as(role)
    before = snapshot(engine)
    for path, data in WRITES:
        answer = member.post(path.format(task=task), data, follow_redirects=False)
        assert answer.status_code == 403, (path, answer.status_code)
    assert snapshot(engine) == before


def test_another_workspaces_ids_answer_404(
    console: Console, client: TestClient, engine: sa.Engine, brand: Brand
) -> None:
    other = make_brand(engine, "other")
    made = client.post(
        "/api/v1/advisors", headers=other.bearer, json={"name": "趙六", "wecom_userid": "zhao"}
    )
    assert made.status_code == 201
    client.post(
        "/api/v1/coupons/templates",
        headers=other.bearer,
        json={"key": "theirs", "kind": "gift", "gift": "茶包"},
    )
    assert console.get(f"/engagement/advisors/{made.json()['id']}").status_code == 404
    assert console.post("/engagement/coupons/theirs/archive").status_code == 404
    assert (
        console.post(
            "/engagement/advisors/tasks/999999", {"status": "done", "outcome": "reached"}
        ).status_code
        == 404
    )


def test_the_customer_page_shows_points_coupons_tier_streak_and_advisor(
    console: Console, client: TestClient, engine: sa.Engine, brand: Brand
) -> None:
    console.post("/engagement/tiers", {"config": LADDER})
    pid = customer(client, engine, brand, "mei", 1500)
    plain = console.get(f"/customers/{pid}").text
    assert 'id="no-coupons"' in plain and 'id="tier">銀卡<' in plain and 'id="checkin-streak">0<' in plain
    client.post(
        "/api/v1/coupons/templates",
        headers=brand.bearer,
        json={"key": "welcome", "name": "新人禮", "kind": "fixed", "value": 50, "valid_days": 7},
    )
    client.post(
        "/api/v1/coupons/issue",
        headers={**brand.bearer, "Idempotency-Key": "i1"},
        json={"template": "welcome", "profile_id": pid},
    )
    client.post(
        "/api/v1/points/award",
        headers={**brand.bearer, "Idempotency-Key": "p1"},
        json={"profile_id": pid, "points": 300, "reason": "生日禮"},
    )
    client.post("/api/v1/checkins", headers=brand.bearer, json={"profile_id": pid})
    page = console.get(f"/customers/{pid}").text
    balance = api(client, brand, f"/api/v1/points/profiles/{pid}")["balance"]
    assert f'id="points-balance">{balance:,}<' in page and balance >= 300
    assert "新人禮" in page and "生日禮" in page and 'id="checkin-streak">1<' in page
    assert re.search(r'id="customer-coupons".*?>issued<', page, re.S)
