"""Referrals through the ingest API and the resolver: codes and links, attribution of the new
customer, rewards to both sides once on their first purchase, each fraud guard, the leaderboard, and
bad input refused with a reason."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from lifeloop.engagement.referrals.models import referrals
from lifeloop.engagement.referrals.service import complete_first_purchase, set_program
from lifeloop.store.schema import utcnow
from tests.cli_helpers import run_cli
from tests.conftest import Brand, snapshot
from tests.engagement.tiers_world import NOW, Shop

PROGRAM: dict[str, Any] = {
    "landing_url": "https://shop.example.com/welcome?utm_source=friend",
    "public_url": "https://crm.example.com",
    "referrer_reward": {"points": 200, "coupon": "thanks"},
    "referee_reward": {"points": 100, "coupon": "new-friend"},
}


def shop(client: TestClient, engine: sa.Engine, brand: Brand, **rules: Any) -> Shop:
    world = Shop(client, engine, brand)
    world.template("thanks")
    world.template("new-friend")
    with engine.begin() as conn:
        set_program(conn, brand.workspace_id, {**PROGRAM, **rules}, now=NOW)
    return world


def code_of(world: Shop, pid: int) -> str:
    answer = world.client.post(f"/api/v1/referrals/profiles/{pid}/code", headers=world.brand.bearer)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["code"])


def rewards(world: Shop, pid: int) -> tuple[int, list[str]]:
    """Referral points earned and coupons held by a customer."""
    points = sum(
        p["points"] for who, p in world.recorded("Points Earned") if who == pid and p["reason"] == "referral"
    )
    return points, world.coupons_of(pid)


def referral_rows(world: Shop) -> list[tuple[int, int, str, str | None]]:
    with world.engine.connect() as conn:
        rows = conn.execute(
            sa.select(referrals).where(referrals.c.workspace_id == world.ws).order_by(referrals.c.id)
        )
        return [(r.referee_id, r.referrer_id, r.status, r.reason) for r in rows]


def test_a_friends_first_purchase_rewards_both_sides_exactly_once(
    client: TestClient, engine: sa.Engine, brand: Brand
) -> None:
    world = shop(client, engine, brand)
    ann = world.identify("ann", {"phone": "+886911000001"}, context={"device": {"id": "dev-ann"}})
    code = code_of(world, ann)
    assert len(code) == 8 and code_of(world, ann) == code  # one code per customer
    link = client.post(f"/api/v1/referrals/profiles/{ann}/code", headers=brand.bearer).json()["link"]
    assert link == f"https://crm.example.com/r/{code}"
    landing = client.get(f"/r/{code.lower()}", follow_redirects=False)
    assert landing.status_code == 302
    assert landing.headers["location"] == f"https://shop.example.com/welcome?utm_source=friend&ref={code}"
    assert client.get("/r/ZZZZZZZZ", follow_redirects=False).status_code == 404

    # The friend lands with ?ref= (context.campaign), browses anonymously, then signs up and buys.
    world.call(
        "page",
        {"anonymousId": "anon-bob", "context": {"campaign": {"ref": code}, "device": {"id": "dev-bob"}}},
    )
    bob = world.identify("bob", {"phone": "+886922000002"}, anonymousId="anon-bob")
    assert referral_rows(world) == [(bob, ann, "joined", None)]
    assert next(p for _pid, p in world.recorded("Referral Joined"))["referrer_id"] == ann
    assert rewards(world, ann) == (0, []) and rewards(world, bob) == (0, [])

    first = world.order("bob", 300)
    assert referral_rows(world) == [(bob, ann, "completed", None)]
    assert rewards(world, ann) == (200, ["thanks"])
    assert rewards(world, bob) == (100, ["new-friend"])
    completed = world.recorded("Referral Completed")
    assert sorted((pid, p["role"]) for pid, p in completed) == sorted([(bob, "referee"), (ann, "referrer")])

    world.order("bob", 300, message_id=first)  # the same event delivered twice
    world.order("bob", 500)  # a second purchase is not a first one
    assert rewards(world, ann) == (200, ["thanks"]) and rewards(world, bob) == (100, ["new-friend"])
    assert len(world.recorded("Referral Completed")) == 2

    mine = client.get(f"/api/v1/referrals/profiles/{ann}", headers=brand.bearer).json()
    assert mine["code"] == code and mine["link"] == link
    assert [(r["referee_id"], r["status"]) for r in mine["referred"]] == [(bob, "completed")]
    theirs = client.get(f"/api/v1/referrals/profiles/{bob}", headers=brand.bearer).json()
    assert theirs["referred_by"]["referrer_id"] == ann and theirs["referred"] == []


def test_an_attribution_by_api_is_idempotent_and_may_reward_the_new_customer_at_once(
    client: TestClient, engine: sa.Engine, brand: Brand
) -> None:
    world = shop(client, engine, brand, referee_reward={"coupon": "new-friend", "on": "join"})
    ann, bob = world.identify("ann"), world.identify("bob")
    code = code_of(world, ann)
    body = {"profile_id": bob, "code": code, "device_id": "dev-bob"}
    headers = {**brand.bearer, "Idempotency-Key": "join-bob-1"}
    first = client.post("/api/v1/referrals/attributions", json=body, headers=headers)
    assert first.status_code == 200, first.text
    assert first.json()["status"] == "joined" and first.json()["referrer_id"] == ann
    assert world.coupons_of(bob) == ["new-friend"]
    before = snapshot(engine)
    again = client.post("/api/v1/referrals/attributions", json=body, headers=headers)
    assert again.json() == first.json()
    world.now = utcnow() + timedelta(minutes=1)  # the shop's clock after the API's attribution
    other_code = client.post(
        "/api/v1/referrals/attributions",
        json={"profile_id": bob, "code": code_of(world, world.identify("cat"))},
        headers={**brand.bearer, "Idempotency-Key": "join-bob-2"},
    )
    assert other_code.json()["id"] == first.json()["id"]  # the first code wins
    world.order("bob", 100)
    assert world.coupons_of(bob) == ["new-friend"]  # given at joining, not again
    assert rewards(world, ann) == (200, ["thanks"])
    assert before != snapshot(engine)


def test_bad_input_is_refused_with_a_reason_and_changes_nothing(
    client: TestClient, engine: sa.Engine, brand: Brand
) -> None:
    world = shop(client, engine, brand)
    ann, bob = world.identify("ann"), world.identify("bob")
    code = code_of(world, ann)
    before = snapshot(engine)
    attribution = "/api/v1/referrals/attributions"
    missing_key = client.post(attribution, json={"profile_id": bob, "code": code}, headers=brand.bearer)
    assert missing_key.status_code == 400 and missing_key.json()["field"] == "Idempotency-Key"
    keyed = {**brand.bearer, "Idempotency-Key": "k-1"}
    unknown = client.post(attribution, json={"profile_id": bob, "code": "22222222"}, headers=keyed)
    assert unknown.status_code == 400 and unknown.json()["field"] == "code"
    assert (
        client.post(attribution, json={"profile_id": 999999, "code": code}, headers=keyed).status_code == 404
    )
    for config, field in [
        ({"landing_url": "ftp://x"}, "landing_url"),
        ({**PROGRAM, "referrer_reward": {"points": -1}}, "referrer_reward.points"),
        ({**PROGRAM, "referrer_reward": {"points": 1, "on": "join"}}, "referrer_reward.on"),
        ({**PROGRAM, "bonus": 1}, "bonus"),
    ]:
        answer = client.put("/api/v1/referrals/program", json={"config": config}, headers=brand.bearer)
        assert answer.status_code == 400 and answer.json()["field"] == field, answer.json()
    board = client.get("/api/v1/referrals/leaderboard?since=2026-12-01T00:00:00", headers=brand.bearer)
    assert board.status_code == 400 and board.json()["field"] == "since"
    assert client.post("/api/v1/referrals/profiles/999999/code", headers=brand.bearer).status_code == 404
    assert snapshot(engine) == before
    assert (
        client.get("/api/v1/referrals/program", headers=brand.bearer).json()["landing_url"]
        == PROGRAM["landing_url"]
    )


def test_each_fraud_guard_refuses_the_reward_with_its_reason(
    client: TestClient, engine: sa.Engine, brand: Brand
) -> None:
    world = shop(client, engine, brand)
    ann = world.identify("ann", {"phone": "+886911000001"}, context={"device": {"id": "dev-ann"}})
    zoe, gus = world.identify("zoe"), world.identify("gus")
    world.order("zoe", 50, payment_fingerprint="card-zoe")
    ann_code, zoe_code, gus_code = code_of(world, ann), code_of(world, zoe), code_of(world, gus)

    world.identify("ann", {"referral_code": ann_code})  # self-referral
    carl = world.identify("carl", {"referral_code": ann_code}, context={"device": {"id": "dev-ann"}})
    dora = world.identify("dora", {"phone": "+886 911 000 001", "referral_code": ann_code})
    fay = world.identify("fay")
    world.order("fay", 80)
    world.identify("fay", {"referral_code": ann_code})  # an existing customer
    erin = world.identify("erin", {"referral_code": zoe_code})
    world.order("erin", 120, payment_fingerprint="card-zoe")  # the referrer's own card
    # An anonymous visitor joins by gus's link, then turns out to be gus himself (the profiles merge).
    world.track("", "Product Viewed", {"referral_code": gus_code}, anonymousId="anon-gus")
    world.identify("gus", anonymousId="anon-gus")
    world.order("gus", 60)

    rows = {referee: (status, reason) for referee, _referrer, status, reason in referral_rows(world)}
    assert rows[ann] == ("rejected", "self_referral")
    assert rows[carl] == ("rejected", "same_device")
    assert rows[dora] == ("rejected", "same_phone")
    assert rows[fay] == ("rejected", "existing_customer")
    assert rows[erin] == ("rejected", "same_payment")
    assert ("rejected", "self_referral") in [
        v for k, v in rows.items() if k not in (ann, carl, dora, fay, erin)
    ]
    rejected = sorted((p["reason"], p["stage"]) for _pid, p in world.recorded("Referral Rejected"))
    assert rejected == sorted(
        [
            ("self_referral", "join"),
            ("same_device", "join"),
            ("same_phone", "join"),
            ("existing_customer", "join"),
            ("same_payment", "first_purchase"),
            ("self_referral", "first_purchase"),
        ]
    )
    assert world.recorded("Referral Completed") == []
    for pid in (ann, zoe, gus, carl, dora, fay, erin):
        assert rewards(world, pid) == (0, [])


def test_the_leaderboard_ranks_referrers_by_completed_referrals_in_the_window(
    client: TestClient, engine: sa.Engine, brand: Brand, settings: Any
) -> None:
    world = shop(client, engine, brand, referrer_reward={"points": 10}, referee_reward=None)
    ann, zoe, gus = world.identify("ann"), world.identify("zoe"), world.identify("gus")
    codes = {"ann": code_of(world, ann), "zoe": code_of(world, zoe), "gus": code_of(world, gus)}

    def refer(referrer: str, friend: str, *, buys: bool = True) -> None:
        world.identify(friend, {"referral_code": codes[referrer]})
        if buys:
            world.order(friend, 10)
        world.now += timedelta(minutes=1)

    world.now = NOW - timedelta(days=40)
    refer("gus", "old-1")
    refer("gus", "old-2")  # outside the last 30 days
    world.now = NOW - timedelta(days=2)
    refer("zoe", "f1")
    refer("ann", "f2")
    refer("ann", "f3")
    refer("zoe", "f4")
    refer("gus", "f5")
    refer("gus", "f6", buys=False)  # joined, not completed: does not count
    board = client.get(
        "/api/v1/referrals/leaderboard",
        params={"since": (NOW - timedelta(days=30)).isoformat(), "until": NOW.isoformat()},
        headers=brand.bearer,
    ).json()
    # ann and zoe both have 2; ann reached 2 first.
    assert [(r["rank"], r["user_id"], r["completed"]) for r in board] == [
        (1, "ann", 2),
        (2, "zoe", 2),
        (3, "gus", 1),
    ]
    everything = client.get(
        "/api/v1/referrals/leaderboard",
        params={"since": (NOW - timedelta(days=60)).isoformat(), "until": NOW.isoformat(), "limit": 1},
        headers=brand.bearer,
    ).json()
    assert [(r["user_id"], r["completed"]) for r in everything] == [("gus", 3)]

    shown = run_cli(["referrals", "leaderboard", "-w", "acme", "--days", "30"], settings.database_url)
    assert shown.exit_code == 0, shown.output
    assert shown.stdout.index("ann") < shown.stdout.index("zoe") < shown.stdout.index("gus")


def test_the_cli_makes_codes_attributes_with_a_key_and_explains_refusals(
    client: TestClient, engine: sa.Engine, brand: Brand, settings: Any
) -> None:
    world = shop(client, engine, brand)
    world.identify("ann")
    world.identify("bob")
    url = settings.database_url
    made = run_cli(["referrals", "code", "ann", "-w", "acme"], url)
    assert made.exit_code == 0, made.output
    code = made.stdout.split()[0]
    assert made.stdout.split()[1] == f"https://crm.example.com/r/{code}"
    joined = run_cli(["referrals", "attribute", "bob", code, "-w", "acme", "--key", "cli-1"], url)
    assert joined.exit_code == 0 and "joined" in joined.stdout, joined.output
    before = snapshot(engine)
    assert (
        "joined"
        in run_cli(["referrals", "attribute", "bob", code, "-w", "acme", "--key", "cli-1"], url).stdout
    )
    refused = run_cli(["referrals", "attribute", "bob", "NOPE", "-w", "acme", "--key", "cli-2"], url)
    assert refused.exit_code == 1 and "no referral code 'NOPE'" in refused.output
    no_key = run_cli(["referrals", "attribute", "bob", code, "-w", "acme"], url)
    assert no_key.exit_code != 0 and "--key" in no_key.output
    unknown = run_cli(["referrals", "show", "nobody", "-w", "acme"], url)
    assert unknown.exit_code == 1 and "no profile with user_id 'nobody'" in unknown.output
    assert snapshot(engine) == before


def test_two_concurrent_first_purchases_of_one_referee_reward_once(
    client: TestClient, engine: sa.Engine, brand: Brand, backend: str
) -> None:
    if backend != "postgresql":
        pytest.skip("SQLite has one writer: transactions cannot overlap")
    world = shop(client, engine, brand)
    ann = world.identify("ann")
    bob = world.identify("bob", {"referral_code": code_of(world, ann)})
    start = threading.Barrier(2)
    settled: list[Any] = []

    def purchase(n: int) -> None:
        start.wait()
        with engine.begin() as conn:
            settled.append(
                complete_first_purchase(
                    conn,
                    world.ws,
                    bob,
                    message_id=f"order-{n}",
                    properties={"revenue": 10},
                    device_id=None,
                    now=NOW,
                )
            )

    threads = [threading.Thread(target=purchase, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(s is None for s in settled) == [False, True]
    assert referral_rows(world) == [(bob, ann, "completed", None)]
    assert rewards(world, ann) == (200, ["thanks"]) and rewards(world, bob) == (100, ["new-friend"])


def test_a_referrer_reward_without_points_pays_the_points_programmes_referral_rule(
    client: TestClient, engine: sa.Engine, brand: Brand
) -> None:
    from lifeloop.engagement.points.settings import get_settings

    world = shop(
        client, engine, brand, referrer_reward={"coupon": "thanks"}, referee_reward={"coupon": "new-friend"}
    )
    ann = world.identify("ann")
    bob = world.identify("bob", {"referral_code": code_of(world, ann)})
    world.order("bob", 10)
    with engine.connect() as conn:
        rule = get_settings(conn, world.ws).rules["referral"]["points"]
    assert rule > 0
    assert rewards(world, ann) == (rule, ["thanks"])
    assert rewards(world, bob) == (0, ["new-friend"])


def test_two_first_orders_ingested_and_resolved_at_once_reward_once(
    client: TestClient, engine: sa.Engine, brand: Brand, backend: str
) -> None:
    from lifeloop.events.messages import parse_message
    from lifeloop.events.service import ingest
    from lifeloop.profiles.resolver import resolve_pending
    from lifeloop.workspaces.models import SourceKey

    if backend != "postgresql":
        pytest.skip("SQLite has one writer: resolvers cannot overlap")
    world = shop(client, engine, brand)
    ann = world.identify("ann")
    bob = world.identify("bob", {"referral_code": code_of(world, ann)})
    source = SourceKey(workspace_id=world.ws, source_id=brand.source_id)
    start = threading.Barrier(2)

    def order_and_resolve(n: int) -> None:
        message = {
            "type": "track",
            "userId": "bob",
            "event": "Order Completed",
            "properties": {"revenue": 10},
        }
        ingest(engine, source, [parse_message({**message, "messageId": f"o-{n}"}, received_at=utcnow())])
        start.wait()
        resolve_pending(engine, world.ws, now=NOW)

    threads = [threading.Thread(target=order_and_resolve, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert referral_rows(world) == [(bob, ann, "completed", None)]
    assert rewards(world, ann) == (200, ["thanks"]) and rewards(world, bob) == (100, ["new-friend"])
    assert len(world.recorded("Referral Completed")) == 2


def test_a_code_and_a_first_order_in_one_batch_complete_and_a_merged_in_customer_is_not_new(
    client: TestClient, engine: sa.Engine, brand: Brand
) -> None:
    world = shop(client, engine, brand)
    ann = world.identify("ann")
    code = code_of(world, ann)
    sent = client.post(
        "/v1/batch",
        json={
            "batch": [
                {"type": "identify", "userId": "bob", "traits": {"referral_code": code}, "messageId": "b-1"},
                {
                    "type": "track",
                    "userId": "bob",
                    "event": "Order Completed",
                    "properties": {"revenue": 10},
                    "messageId": "b-2",
                },
            ]
        },
        auth=brand.auth,
    )
    assert sent.status_code == 200, sent.text
    from lifeloop.profiles.resolver import resolve_pending

    resolve_pending(engine, now=NOW)
    bob = world.pid("bob")
    assert referral_rows(world) == [(bob, ann, "completed", None)]

    # Cat is a customer already; she follows a link on another device, anonymously, then signs in.
    cat = world.identify("cat")
    world.order("cat", 40)
    world.call("page", {"anonymousId": "anon-cat", "context": {"campaign": {"ref": code}}})
    world.identify("cat", anonymousId="anon-cat")
    world.order("cat", 60)
    assert referral_rows(world)[1][1:] == (ann, "rejected", "existing_customer")
    assert [p["stage"] for pid, p in world.recorded("Referral Rejected") if pid == cat] == ["first_purchase"]
    assert rewards(world, cat) == (0, [])
    assert rewards(world, ann) == (200, ["thanks"])  # for bob only
