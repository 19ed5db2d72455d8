"""Member tiers through the ingest API and the resolver: an upgrade on the order that crosses a
threshold (with its event, coupon and bonus points), downgrades only at review, the member day."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from fastapi.testclient import TestClient

from lifeloop.engagement.tiers import hooks
from lifeloop.engagement.tiers.models import member_days, tier_changes
from lifeloop.engagement.tiers.service import set_program, tier_of
from tests.cli_helpers import run_cli
from tests.conftest import Brand, snapshot
from tests.engagement.tiers_world import NOW, Shop

LADDER: dict[str, Any] = {
    "window_days": 365,
    "tiers": [
        {"key": "member", "name": "一般會員"},
        {
            "key": "silver",
            "name": "銀卡",
            "min_spend": 1000,
            "points_multiplier": 1.5,
            "benefits": ["生日禮"],
            "upgrade_coupons": ["silver-gift"],
        },
        {
            "key": "gold",
            "name": "金卡",
            "min_spend": 5000,
            "points_multiplier": 2,
            "upgrade_coupons": ["gold-gift"],
        },
        {"key": "vip", "name": "VIP", "min_spend": 20000, "points_multiplier": 3},
    ],
}


def shop(client: TestClient, engine: sa.Engine, brand: Brand, **rules: Any) -> Shop:
    world = Shop(client, engine, brand)
    for key in ("silver-gift", "gold-gift", "md-member", "md-gold"):
        world.template(key)
    with engine.begin() as conn:
        set_program(conn, brand.workspace_id, {**LADDER, **rules}, now=NOW)
    return world


def changes(world: Shop, pid: int) -> list[tuple[str | None, str, str, str]]:
    with world.engine.connect() as conn:
        rows = conn.execute(
            sa.select(tier_changes)
            .where(tier_changes.c.workspace_id == world.ws, tier_changes.c.profile_id == pid)
            .order_by(tier_changes.c.id)
        )
        return [(r.from_tier, r.to_tier, r.direction, r.reason) for r in rows]


def tier(world: Shop, pid: int) -> str | None:
    with world.engine.connect() as conn:
        return tier_of(conn, world.ws, [pid])[pid]


def test_the_order_that_crosses_a_threshold_upgrades_at_once_with_its_event_coupon_and_bonus(
    client: TestClient, engine: sa.Engine, brand: Brand
) -> None:
    world = shop(client, engine, brand)
    ann = world.identify("ann")
    assert tier(world, ann) == "member"
    world.order("ann", 600)
    assert tier(world, ann) == "member"
    assert world.points(ann) == 600  # the points programme's own rule: 1 point per unit, no tier bonus

    crossing = world.order("ann", 500)
    assert tier(world, ann) == "silver"
    assert changes(world, ann) == [("member", "silver", "up", "order")]
    (pid, props), *_ = world.recorded("Tier Changed")
    assert pid == ann and props["from"] == "member" and props["to"] == "silver" and props["direction"] == "up"
    assert props["reason"] == "order" and props["to_name"] == "銀卡"
    assert world.coupons_of(ann) == ["silver-gift"]
    assert world.points(ann) == 1100  # that order earned at the tier held when it landed

    world.order("ann", 200)  # at silver: 200 base + 0.5 × 200 bonus
    assert world.points(ann) == 1400
    # The same events delivered again change nothing: no second change, coupon or bonus.
    world.order("ann", 500, message_id=crossing)
    world.order("ann", 200, message_id=world.last_message_id)
    assert changes(world, ann) == [("member", "silver", "up", "order")]
    assert world.coupons_of(ann) == ["silver-gift"]
    assert world.points(ann) == 1400

    world.order("ann", 20000)  # past gold and VIP at once: straight to VIP, gold's coupon not given
    assert tier(world, ann) == "vip"
    assert changes(world, ann)[-1] == ("silver", "vip", "up", "order")
    assert world.coupons_of(ann) == ["silver-gift"]

    status = client.get(f"/api/v1/tiers/profiles/{ann}", headers=brand.bearer).json()
    assert status["tier"] == "vip" and status["spend"] == "21300" and status["next"] is None
    bob = world.identify("bob")
    world.order("bob", 400)
    status = client.get(f"/api/v1/tiers/profiles/{bob}", headers=brand.bearer).json()
    assert status["tier"] == "member" and status["since"] is None
    assert status["next"] == {"tier": "silver", "name": "銀卡", "spend_needed": "600"}
    history = client.get(f"/api/v1/tiers/profiles/{ann}/history", headers=brand.bearer).json()
    assert [(h["from"], h["to"], h["direction"]) for h in history] == [
        ("member", "silver", "up"),
        ("silver", "vip", "up"),
    ]


def test_refunds_and_time_lower_a_tier_only_at_review_one_step_at_a_time(
    client: TestClient, engine: sa.Engine, brand: Brand
) -> None:
    world = shop(client, engine, brand, window_days=60, review={"every": "month", "day": 1})
    ann = world.identify("ann")
    world.order("ann", 6000)
    assert tier(world, ann) == "gold"
    world.track("ann", "Order Refunded", {"revenue": 5500})  # spend 500: qualifies for no tier now
    assert tier(world, ann) == "gold"  # no downgrade until the review
    assert hooks.sweep(engine, NOW + timedelta(days=10)) == 0
    assert tier(world, ann) == "gold"

    # The review is on the 1st, midnight in Taipei: 2026-12-31 16:00 UTC.
    review = datetime(2026, 12, 31, 16, 0, tzinfo=UTC)
    assert hooks.sweep(engine, review - timedelta(seconds=1)) == 0
    assert hooks.sweep(engine, review) == 1
    assert tier(world, ann) == "silver"  # one step down, though the window qualifies for none
    assert hooks.sweep(engine, review) == 0  # that review is done
    assert hooks.sweep(engine, datetime(2027, 1, 31, 16, 0, tzinfo=UTC)) == 1
    assert tier(world, ann) == "member"
    assert changes(world, ann) == [
        ("member", "gold", "up", "order"),
        ("gold", "silver", "down", "review"),
        ("silver", "member", "down", "review"),
    ]
    downs = [p for _pid, p in world.recorded("Tier Changed") if p["direction"] == "down"]
    assert [(p["from"], p["to"], p["reason"]) for p in downs] == [
        ("gold", "silver", "review"),
        ("silver", "member", "review"),
    ]


def test_a_review_keeps_a_tier_the_window_still_holds_and_can_drop_to_the_qualifying_tier(
    client: TestClient, engine: sa.Engine, brand: Brand
) -> None:
    world = shop(client, engine, brand, downgrade="to_qualifying", review={"every": "anniversary"})
    ann, bob = world.identify("ann"), world.identify("bob")
    world.order("ann", 6000)
    world.order("bob", 6000)
    world.now = NOW + timedelta(days=300)
    world.order("bob", 5000)  # bob keeps spending inside the rolling window
    assert hooks.sweep(engine, NOW + timedelta(days=364)) == 0  # no anniversary yet
    assert hooks.sweep(engine, NOW + timedelta(days=366)) == 1  # ann's 6000 left the window
    assert (tier(world, ann), tier(world, bob)) == ("member", "gold")
    assert changes(world, ann)[-1] == ("gold", "member", "down", "review")


def test_the_member_day_multiplies_that_days_points_and_issues_each_tiers_coupons_once_a_month(
    client: TestClient, engine: sa.Engine, brand: Brand
) -> None:
    tiers = [dict(t) for t in LADDER["tiers"]]
    tiers[0]["member_day_coupons"] = ["md-member"]
    tiers[2]["member_day_coupons"] = ["md-gold"]
    world = shop(client, engine, brand, tiers=tiers, member_day={"day": 8, "points_multiplier": 2})
    ann, bob = world.identify("ann"), world.identify("bob")
    world.order("ann", 6000)  # gold on the 7th: 6000 base points, no member-day bonus
    assert tier(world, ann) == "gold" and world.points(ann) == 6000

    member_day = datetime(2026, 12, 7, 16, 0, tzinfo=UTC)  # the 8th, 00:00 in Taipei
    world.now = member_day + timedelta(hours=3)
    world.order("bob", 100)  # member ×1 × member day ×2: 100 bonus
    world.order("ann", 100)  # gold ×2 × member day ×2: 300 bonus
    assert world.points(bob) == 200 and world.points(ann) == 6000 + 400

    assert hooks.sweep(engine, member_day - timedelta(minutes=1)) == 0
    assert hooks.sweep(engine, member_day + timedelta(hours=1)) == 2
    assert hooks.sweep(engine, member_day + timedelta(hours=2)) == 0  # once per month
    assert world.coupons_of(ann) == ["gold-gift", "md-gold"]
    assert world.coupons_of(bob) == ["md-member"]

    world.now = member_day + timedelta(days=1)  # the 9th: no multiplier
    world.order("bob", 100)
    assert world.points(bob) == 300
    next_month = datetime(2027, 1, 8, 1, 0, tzinfo=UTC)
    assert hooks.sweep(engine, next_month) == 2
    assert world.coupons_of(bob) == ["md-member", "md-member"]
    with engine.connect() as conn:
        months = conn.execute(
            sa.select(member_days.c.month, member_days.c.coupons_issued).where(
                member_days.c.workspace_id == world.ws
            )
        ).all()
    assert sorted(months) == [("2026-12", 2), ("2027-01", 2)]


def test_points_earned_can_reach_a_tier_that_counts_points(
    client: TestClient, engine: sa.Engine, brand: Brand
) -> None:
    from lifeloop.engagement.points.ledger import award_points

    tiers = [
        {"key": "member", "name": "一般會員"},
        {"key": "star", "name": "星級", "min_points": 500},
        {"key": "gold", "name": "金卡", "min_spend": 5000},
    ]
    world = shop(client, engine, brand, tiers=tiers)
    ann = world.identify("ann")
    with engine.begin() as conn:
        award_points(conn, world.ws, ann, 300, key="gift-1", reason="check-in", now=NOW)
    assert tier(world, ann) == "member"
    with engine.begin() as conn:
        award_points(conn, world.ws, ann, 200, key="gift-2", reason="check-in", now=NOW)
    assert tier(world, ann) == "star"
    assert changes(world, ann) == [("member", "star", "up", "points")]
    # The order's own points reach tiers before the order does; what raised ann is still her spend.
    world.order("ann", 6000)
    assert changes(world, ann) == [("member", "star", "up", "points"), ("star", "gold", "up", "order")]


def test_a_wrong_programme_is_refused_with_its_reason_and_changes_nothing(
    client: TestClient, engine: sa.Engine, brand: Brand
) -> None:
    world = shop(client, engine, brand)
    ann = world.identify("ann")
    before = snapshot(engine)
    wrong = [
        ({"tiers": []}, "tiers"),
        ({"tiers": [{"key": "member"}, {"key": "gold", "name": "金卡"}]}, "tiers"),
        ({"tiers": [{"key": "member", "min_spend": 5}]}, "tiers[0]"),
        ({**LADDER, "window_days": 0}, "window_days"),
        ({**LADDER, "downgrade": "sometimes"}, "downgrade"),
        ({**LADDER, "member_day": {"day": 31}}, "member_day.day"),
        (
            {"tiers": [{"key": "member"}, {"key": "a", "min_spend": 500}, {"key": "b", "min_spend": 100}]},
            "tiers[2]",
        ),
        ({"tiers": [{"key": "member"}, {"key": "a", "min_spend": "lots"}]}, "tiers[1].min_spend"),
    ]
    for config, field in wrong:
        answer = client.put("/api/v1/tiers/program", json={"config": config}, headers=brand.bearer)
        assert answer.status_code == 400, config
        assert answer.json()["field"] == field, answer.json()
    assert client.get("/api/v1/tiers/profiles/999999", headers=brand.bearer).status_code == 404
    assert snapshot(engine) == before
    assert client.get("/api/v1/tiers/program", headers=brand.bearer).json()["tiers"][1]["min_spend"] == "1000"
    assert tier(world, ann) == "member"


def test_the_cli_sets_the_ladder_shows_a_tier_and_explains_refusals(
    client: TestClient, engine: sa.Engine, brand: Brand, settings: Any, tmp_path: Any
) -> None:
    import json

    world = shop(client, engine, brand)
    world.identify("ann")
    world.order("ann", 1200)
    url = settings.database_url
    shown = run_cli(["tiers", "show", "ann", "-w", "acme"], url)
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["tier"] == "silver"
    assert json.loads(run_cli(["tiers", "history", "ann", "-w", "acme"], url).stdout)[0]["to"] == "silver"

    before = snapshot(engine)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("tiers:\n  - {key: member}\n  - {key: gold, name: 金卡}\n", encoding="utf-8")
    refused = run_cli(["tiers", "program", "set", str(wrong), "-w", "acme"], url)
    assert (
        refused.exit_code == 1
        and "every tier above the first needs min_spend or min_points" in refused.output
    )
    missing = run_cli(["tiers", "show", "nobody", "-w", "acme"], url)
    assert missing.exit_code == 1 and "no profile with user_id 'nobody'" in missing.output
    assert snapshot(engine) == before

    right = tmp_path / "ladder.yaml"
    right.write_text(
        "tiers:\n  - {key: member, name: 一般會員}\n  - {key: gold, name: 金卡, min_spend: 100}\n",
        encoding="utf-8",
    )
    saved = run_cli(["tiers", "program", "set", str(right), "-w", "acme"], url)
    assert saved.exit_code == 0 and "一般會員 < 金卡" in saved.output, saved.output


def test_two_concurrent_reasons_to_upgrade_one_customer_upgrade_once(
    client: TestClient, engine: sa.Engine, brand: Brand, backend: str
) -> None:
    import threading

    import pytest

    from lifeloop.engagement.tiers.service import reconsider

    if backend != "postgresql":
        pytest.skip("SQLite has one writer: transactions cannot overlap")
    world = shop(client, engine, brand)
    ann = world.identify("ann")
    world.order("ann", 900)
    start = threading.Barrier(2)
    done: list[Any] = []

    def upgrade(n: int) -> None:
        start.wait()
        with engine.begin() as conn:
            done.append(reconsider(conn, world.ws, ann, now=NOW, key=f"race-{n}", reason="order"))

    from lifeloop.events.models import events

    with engine.begin() as conn:  # a second order placed without reactions: both racers see 1100 spent
        conn.execute(
            sa.insert(events).values(
                workspace_id=world.ws,
                message_id="quiet-order",
                type="track",
                event="Order Completed",
                profile_id=ann,
                timestamp=NOW,
                received_at=NOW,
                properties={"revenue": 200},
            )
        )
    threads = [threading.Thread(target=upgrade, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(d is None for d in done) == [False, True]
    assert changes(world, ann) == [("member", "silver", "up", "order")]
    assert world.coupons_of(ann) == ["silver-gift"]
