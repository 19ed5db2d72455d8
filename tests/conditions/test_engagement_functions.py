"""The engagement functions of the condition language — ``points()``, ``tier()``, ``coupon_unused(…)``,
``checkin_streak()`` — on every back end (evaluator, SQL, columnar), kept current by the programme's
own events and by the sweeps when only time passes.

Profiles get their points, coupons, check-ins and tiers through the programme's own services (or the
REST API and the ingest path), never by writing its tables, except the stored tier rows of the
agreement test (a tier key the ladder no longer has must read as its first tier).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

import lifeloop.engagement  # noqa: F401  (registers the functions' providers)
from lifeloop.analytics.sync import sync
from lifeloop.audience import batch
from lifeloop.audience import service as audience
from lifeloop.audience.definitions import create_segment, put_tag_rule
from lifeloop.audience.models import audience_rechecks, profile_tags, segment_members, segments
from lifeloop.columnar import Workspace
from lifeloop.conditions import (
    ConditionSyntaxError,
    MemoryProfile,
    StoredProfile,
    evaluate,
    matching_profiles,
    parse,
    to_text,
)
from lifeloop.conditions.ast import Fact
from lifeloop.engagement.coupons.service import issue_coupon, redeem_coupon, unused_coupons
from lifeloop.engagement.coupons.templates import create_template
from lifeloop.engagement.points import award_points, balances, checkin_streaks, spend_points
from lifeloop.engagement.points.checkin import check_in
from lifeloop.engagement.tiers.models import tier_members
from lifeloop.engagement.tiers.service import set_program, tier_of
from lifeloop.lifecycle.rechecks import next_recheck
from lifeloop.recompute import recompute_workspace
from lifeloop.store.locks import RESOLUTION
from tests.conftest import Brand
from tests.engagement.points_helpers import customers, ingest, track
from tests.journeys.world import World

# 2026-12-07 10:00 in Asia/Taipei (the test brand's zone, UTC+8).
NOW = datetime(2026, 12, 7, 2, 0, tzinfo=UTC)
DAY = timedelta(days=1)
LADDER: dict[str, Any] = {
    "tiers": [
        {"key": "member", "name": "會員"},
        {"key": "gold", "name": "金卡", "min_spend": 5000},
        {"key": "vip", "name": "VIP", "min_spend": 20000},
    ]
}


# --- the language ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message", "column"),
    [
        ("points(1) >= 2", "points() takes no arguments: points()", 8),
        ('tier("vip") == "vip"', "tier() takes no arguments: tier()", 6),
        ('checkin_streak(within="7d") >= 3', "checkin_streak() has no argument within=", 16),
        ("coupon_unused(7) > 0", "coupon_unused() takes a coupon template key as a quoted string", 15),
        ('coupon_unused("a", "b") > 0', "coupon_unused() takes no argument, or one coupon template key", 20),
        ('coupon_unused("") > 0', "a coupon template key must be 1-255 characters", 15),
        ('points() == "many"', "cannot compare a number with a string", 10),
        ("tier() > 1", "cannot compare a string with a number", 8),
        ("points()", "expected a comparison operator", 9),
        ('count("Order Completed", where=points() > 1) > 0', "where= may only test event properties", 26),
        ("days_since(points()) > 1", "days_since() takes a time", 12),
    ],
)
def test_wrong_arguments_are_refused_with_a_position(text: str, message: str, column: int) -> None:
    with pytest.raises(ConditionSyntaxError) as caught:
        parse(text)
    assert message in caught.value.reason, caught.value.reason
    assert caught.value.column == column and caught.value.field == "condition"


def test_the_functions_print_and_parse_back() -> None:
    for text in (
        "points() >= 100",
        'tier() == "vip"',
        'tier() in ["gold", "vip"]',
        'coupon_unused("day7") > 0',
        "coupon_unused() == 0",
        "checkin_streak() >= 3",
        'not tier() == "vip" and points() > checkin_streak()',
    ):
        assert to_text(parse(text)) == text


def test_a_wrong_segment_condition_is_a_400_with_its_position(client: TestClient, brand: Brand) -> None:
    answer = client.post(
        "/api/v1/segments/preview", json={"condition": "points(1) >= 100"}, headers=brand.bearer
    )
    assert answer.status_code == 400
    assert "points() takes no arguments" in answer.json()["message"]
    assert "line 1, column 8" in answer.json()["message"]


def test_a_memory_profile_without_facts_is_a_customer_without_any() -> None:
    bare = MemoryProfile(now=NOW)
    assert evaluate(parse("points() == 0 and checkin_streak() == 0 and coupon_unused() == 0"), bare)
    assert not evaluate(parse('tier() == "member"'), bare) and evaluate(parse('not tier() == "x"'), bare)
    rich = MemoryProfile(now=NOW, facts={Fact("points"): 120, Fact("coupon_unused", "day7"): 1})
    assert evaluate(parse('points() >= 100 and coupon_unused("day7") > 0 and coupon_unused() == 0'), rich)


# --- every back end agrees -------------------------------------------------------------------------


def _template(conn: sa.Connection, ws: int, key: str, **spec: Any) -> None:
    create_template(conn, ws, key, {"name": key, "kind": "fixed", "value": 50, **spec}, now=NOW - 10 * DAY)


def _programme(engine: sa.Engine, brand: Brand, client: TestClient) -> dict[str, int]:
    """Five customers with points (some expired or spent; each check-in earns 5, a third day in a row 10
    more), coupons (expired, redeemed, of two templates), check-in streaks (current, ending yesterday,
    broken) and tiers: ann 175 points, bob 90, cat 80, dan 100, eve 5."""
    ws = brand.workspace_id
    ann, bob, cat, dan, eve = customers(client, brand, "ann", "bob", "cat", "dan", "eve", now=NOW - 20 * DAY)
    with engine.begin() as conn:
        set_program(conn, ws, LADDER, now=NOW - 20 * DAY)
        _template(conn, ws, "day7", valid_days=7)
        _template(conn, ws, "welcome", valid_days=30)
        award_points(conn, ws, ann, 150, key="a1", reason="gift", now=NOW - 3 * DAY)
        award_points(conn, ws, bob, 80, key="b1", reason="gift", now=NOW - 3 * DAY)
        award_points(conn, ws, bob, 40, key="b2", reason="gift", now=NOW - 3 * DAY, expires_at=NOW - DAY)
        award_points(conn, ws, cat, 300, key="c1", reason="gift", now=NOW - 3 * DAY)
        spend_points(conn, ws, cat, 250, key="c2", reason="mall", now=NOW - 2 * DAY)
        award_points(conn, ws, dan, 100, key="d1", reason="gift", now=NOW - 2 * DAY)
        issue_coupon(conn, ws, ann, "day7", key="ia", now=NOW - 2 * DAY)
        issue_coupon(conn, ws, bob, "day7", key="ib", now=NOW - 9 * DAY)  # expired 2 days ago
        issue_coupon(conn, ws, bob, "welcome", key="ib2", now=NOW - 2 * DAY)
        used = issue_coupon(conn, ws, cat, "day7", key="ic", now=NOW - 2 * DAY)
        issue_coupon(conn, ws, dan, "welcome", key="id", now=NOW - 2 * DAY)
        issue_coupon(conn, ws, dan, "day7", key="id2", now=NOW - DAY)
    with engine.begin() as conn:
        redeem_coupon(conn, ws, used.code, profile_id=cat, key="rc", now=NOW - DAY)
    for who, days in ((ann, (2, 1, 0)), (bob, (2, 1)), (cat, (5, 4, 3, 2)), (eve, (0,))):
        for back in days:
            with engine.begin() as conn:
                check_in(conn, ws, who, now=NOW - back * DAY)
    with engine.begin() as conn:
        rows = [(ann, "vip"), (bob, "gold"), (cat, "platinum")]  # platinum: no longer on the ladder
        for pid, tier in rows:
            conn.execute(
                sa.delete(tier_members).where(
                    tier_members.c.workspace_id == ws, tier_members.c.profile_id == pid
                )
            )
            conn.execute(
                sa.insert(tier_members).values(
                    workspace_id=ws,
                    profile_id=pid,
                    tier=tier,
                    since=NOW,
                    review_at=NOW + 30 * DAY,
                    updated_at=NOW,
                )
            )
    return {"ann": ann, "bob": bob, "cat": cat, "dan": dan, "eve": eve}


CONDITIONS = [
    "points() >= 100",
    "points() > 80",
    "points() == 80",
    "points() < 60",
    "points() == 0",
    'tier() == "vip"',
    'tier() == "member"',
    'tier() in ["gold", "vip"]',
    'not tier() == "vip"',
    'tier() != "gold"',
    "coupon_unused() > 0",
    "coupon_unused() >= 2",
    'coupon_unused("day7") > 0',
    'coupon_unused("day7") == 0 and coupon_unused("welcome") == 1',
    'coupon_unused("nothing") == 0',
    "checkin_streak() >= 3",
    "checkin_streak() == 2",
    "checkin_streak() == 0",
    "checkin_streak() > coupon_unused()",
    'points() >= 100 or (tier() == "gold" and checkin_streak() >= 2)',
    "points() > 50 and points() < 100",  # read twice: one column of the shared values
    'tier() == "vip" or tier() == "gold"',
]
EXPECTED = {
    "points() >= 100": {"ann", "dan"},
    "points() > 80": {"ann", "bob", "dan"},
    "points() == 80": {"cat"},
    "points() < 60": {"eve"},
    "points() == 0": set(),
    'tier() == "vip"': {"ann"},
    'tier() == "member"': {"cat", "dan", "eve"},
    'tier() in ["gold", "vip"]': {"ann", "bob"},
    'not tier() == "vip"': {"bob", "cat", "dan", "eve"},
    'tier() != "gold"': {"ann", "cat", "dan", "eve"},
    "coupon_unused() > 0": {"ann", "bob", "dan"},
    "coupon_unused() >= 2": {"dan"},
    'coupon_unused("day7") > 0': {"ann", "dan"},
    'coupon_unused("day7") == 0 and coupon_unused("welcome") == 1': {"bob"},
    'coupon_unused("nothing") == 0': {"ann", "bob", "cat", "dan", "eve"},
    "checkin_streak() >= 3": {"ann"},
    "checkin_streak() == 2": {"bob"},
    "checkin_streak() == 0": {"cat", "dan"},
    "checkin_streak() > coupon_unused()": {"ann", "bob", "eve"},
    'points() >= 100 or (tier() == "gold" and checkin_streak() >= 2)': {"ann", "bob", "dan"},
    "points() > 50 and points() < 100": {"bob", "cat"},
    'tier() == "vip" or tier() == "gold"': {"ann", "bob"},
}


def test_evaluator_sql_and_columnar_select_the_same_customers(
    client: TestClient, engine: sa.Engine, brand: Brand, tmp_path: Path
) -> None:
    ws = brand.workspace_id
    people = _programme(engine, brand, client)
    names = {pid: name for name, pid in people.items()}
    ids = list(people.values())
    copy = tmp_path / "copy.duckdb"
    sync(engine, copy, workspace_id=ws)
    with engine.connect() as conn:
        # The parts' own reads, as a MemoryProfile's facts: the reference the back ends must match.
        facts: dict[int, dict[Fact, Any]] = {pid: {} for pid in ids}
        for pid, value in balances(conn, ws, ids, now=NOW).items():
            facts[pid][Fact("points")] = value
        for pid, tier in tier_of(conn, ws, ids).items():
            facts[pid][Fact("tier")] = tier
        for pid, streak in checkin_streaks(conn, ws, ids, now=NOW).items():
            facts[pid][Fact("checkin_streak")] = streak
        for template in (None, "day7", "welcome", "nothing"):
            for pid, count in unused_coupons(conn, ws, ids, now=NOW, template_key=template).items():
                facts[pid][Fact("coupon_unused", template)] = count
        with Workspace(engine, ws, copy, now=NOW) as columnar:
            for text in CONDITIONS:
                condition = parse(text)
                memory = {p for p in ids if evaluate(condition, MemoryProfile(now=NOW, facts=facts[p]))}
                stored = {p for p in ids if evaluate(condition, StoredProfile(conn, ws, p, now=NOW))}
                in_sql = set(matching_profiles(conn, ws, condition, now=NOW))
                in_columnar = set(columnar.matching(condition, conn=conn))
                assert {names[p] for p in memory} == EXPECTED[text], text
                assert stored == memory and in_sql == memory and in_columnar == memory, text


# --- kept current ----------------------------------------------------------------------------------


def _members(engine: sa.Engine, ws: int, key: str) -> set[int]:
    with engine.connect() as conn:
        query = (
            sa.select(segment_members.c.profile_id)
            .join(segments, segments.c.id == segment_members.c.segment_id)
            .where(segment_members.c.workspace_id == ws, segments.c.workspace_id == ws, segments.c.key == key)
        )
        return set(conn.execute(query).scalars())


def _tags(engine: sa.Engine, ws: int, tag: str) -> set[int]:
    with engine.connect() as conn:
        t = profile_tags.c
        return set(conn.execute(sa.select(t.profile_id).where(t.workspace_id == ws, t.tag == tag)).scalars())


def test_a_points_segment_follows_points_awarded_and_spent_through_the_api(
    client: TestClient, engine: sa.Engine, brand: Brand
) -> None:
    ws, h = brand.workspace_id, brand.bearer
    ann, bob = customers(client, brand, "ann", "bob")
    made = client.post("/api/v1/segments", json={"key": "rich", "condition": "points() >= 100"}, headers=h)
    assert made.status_code == 201, made.text
    assert _members(engine, ws, "rich") == set()

    def award(user: str, points: int, key: str) -> None:
        body = {"user_id": user, "points": points, "reason": "gift"}
        answer = client.post("/api/v1/points/award", json=body, headers={**h, "Idempotency-Key": key})
        assert answer.status_code == 200, answer.text

    award("ann", 60, "g1")
    award("bob", 100, "g2")
    assert _members(engine, ws, "rich") == {bob}
    award("ann", 40, "g3")
    assert _members(engine, ws, "rich") == {ann, bob}
    award("ann", 40, "g3")  # retried: nothing changes
    spent = client.post(
        "/api/v1/points/spend",
        json={"user_id": "bob", "points": 1, "reason": "mall"},
        headers={**h, "Idempotency-Key": "s1"},
    )
    assert spent.status_code == 200, spent.text
    assert _members(engine, ws, "rich") == {ann}
    preview = client.post("/api/v1/segments/preview", json={"condition": "points() >= 100"}, headers=h)
    assert preview.json()["count"] == 1 and preview.json()["profiles"][0]["profile_id"] == ann


def test_points_earned_by_an_order_move_the_segment_in_the_resolvers_transaction(
    client: TestClient, engine: sa.Engine, brand: Brand
) -> None:
    """Ingest → the points rule awards → ``Points Earned`` → the segment, all while the event is placed."""
    ws = brand.workspace_id
    (ann,) = customers(client, brand, "ann")
    h = brand.bearer
    from lifeloop.engagement.points.settings import save_section
    from lifeloop.store.schema import utcnow

    with engine.begin() as conn:  # the workspace sets up its points programme, with the default rules
        save_section(conn, ws, "rules", {}, now=utcnow())
    assert client.get("/api/v1/points/rules", headers=h).json()["order"]["rate"] == 1  # a point a dollar
    with engine.begin() as conn:
        create_segment(conn, ws, "rich", None, "points() >= 100")
    ingest(client, brand, [track("ann", "Order Completed", "o-1", revenue=99)])
    assert _members(engine, ws, "rich") == set()
    ingest(client, brand, [track("ann", "Order Completed", "o-2", revenue=5)])
    assert _members(engine, ws, "rich") == {ann}


def test_a_tag_rule_on_tier_follows_the_tier_changed_by_spend(
    client: TestClient, engine: sa.Engine, brand: Brand
) -> None:
    ws = brand.workspace_id
    ann, bob = customers(client, brand, "ann", "bob")
    with engine.begin() as conn:
        set_program(conn, ws, LADDER, now=NOW)
        _row, rule = put_tag_rule(conn, ws, "vip", 'tier() == "vip"')
    batch.after_definition_change(engine, ws, rule, now=NOW)
    assert _tags(engine, ws, "vip") == set()
    ingest(client, brand, [track("ann", "Order Completed", "o-1", revenue=25000)])
    ingest(client, brand, [track("bob", "Order Completed", "o-2", revenue=6000)])
    with engine.connect() as conn:
        assert tier_of(conn, ws, [ann, bob]) == {ann: "vip", bob: "gold"}
    assert _tags(engine, ws, "vip") == {ann}


def test_a_journey_branches_on_the_customers_day7_coupon(engine: sa.Engine, brand: Brand) -> None:
    world = World(engine, brand, now=NOW)
    with engine.begin() as conn:
        _template(conn, world.ws, "day7", valid_days=7)
    world.journey(
        {
            "key": "second",
            "name": {"zh-CN": "复购", "en": "Second purchase"},
            "trigger": {"kind": "event", "event": "Go"},
            "steps": [
                {"key": "holds", "type": "branch", "condition": 'coupon_unused("day7") > 0', "else": "none"},
                {"key": "yes", "type": "exit", "reason": "has_coupon"},
                {"key": "none", "type": "exit", "reason": "no_coupon"},
            ],
        }
    )
    world.identify("ann")
    world.identify("bob")
    ann = world.pid("ann")  # before the write transaction: SQLite has one writer
    with engine.begin() as conn:
        issue_coupon(conn, world.ws, ann, "day7", key="day7-ann", now=NOW)
    world.send("ann", "Go")
    world.send("bob", "Go")
    world.work()
    assert world.state("ann") == [("exited", "yes", "has_coupon")]
    assert world.state("bob") == [("exited", "none", "no_coupon")]


def test_a_streak_segment_follows_check_ins_and_the_midnight_that_breaks_it(
    client: TestClient, engine: sa.Engine, brand: Brand
) -> None:
    """Check-ins record ``Checked In`` (the segment follows at once); a streak left unchecked breaks at
    the second local midnight, when the audience's recheck comes due and the sweep removes it."""
    ws = brand.workspace_id
    (ann,) = customers(client, brand, "ann", now=NOW - 3 * DAY)
    with engine.begin() as conn:
        create_segment(conn, ws, "regulars", None, "checkin_streak() >= 3")
    for back in (2, 1):
        with engine.begin() as conn:
            check_in(conn, ws, ann, now=NOW - back * DAY)
    assert _members(engine, ws, "regulars") == set()
    with engine.begin() as conn:
        check_in(conn, ws, ann, now=NOW)
    assert _members(engine, ws, "regulars") == {ann}
    # Checked in today (the 7th, Taipei): tomorrow the streak still stands, the day after it is broken.
    taipei_midnight = datetime(2026, 12, 7, 16, 0, tzinfo=UTC)  # 8 Dec 00:00 in Taipei
    with engine.connect() as conn:
        recheck = conn.execute(
            sa.select(audience_rechecks.c.recheck_at).where(
                audience_rechecks.c.workspace_id == ws, audience_rechecks.c.profile_id == ann
            )
        ).scalar()
    assert recheck == taipei_midnight
    audience.sweep(engine, ws, now=taipei_midnight + timedelta(minutes=1))
    assert _members(engine, ws, "regulars") == {ann}
    audience.sweep(engine, ws, now=taipei_midnight + DAY + timedelta(minutes=1))
    assert _members(engine, ws, "regulars") == set()


def test_a_coupon_segment_loses_the_customer_when_the_coupon_expires(
    client: TestClient, engine: sa.Engine, brand: Brand
) -> None:
    """The coupon's expiry is the profile's recheck: the audience sweep removes her when it comes,
    whether or not the coupons' own sweep has marked it expired yet."""
    ws = brand.workspace_id
    (ann,) = customers(client, brand, "ann")
    with engine.begin() as conn:
        _template(conn, ws, "day7", valid_days=7)
        create_segment(conn, ws, "holders", None, 'coupon_unused("day7") > 0')
    with engine.begin() as conn:
        coupon = issue_coupon(conn, ws, ann, "day7", key="c-ann", now=NOW)
    assert _members(engine, ws, "holders") == {ann}
    assert coupon.expires_at is not None
    with engine.connect() as conn:
        view = StoredProfile(conn, ws, ann, now=NOW)
        assert next_recheck([parse('coupon_unused("day7") > 0')], view, conn, ws, ann) == coupon.expires_at
    audience.sweep(engine, ws, now=coupon.expires_at - timedelta(seconds=1))
    assert _members(engine, ws, "holders") == {ann}
    audience.sweep(engine, ws, now=coupon.expires_at + timedelta(seconds=1))
    assert _members(engine, ws, "holders") == set()


def test_a_change_made_while_the_resolver_holds_the_workspace_is_rechecked_by_the_sweep(
    client: TestClient, engine: sa.Engine, brand: Brand, backend: str
) -> None:
    """An award outside the resolver does not wait for its lock (that could deadlock with a resolver
    waiting for the award's rows): it marks the profile due, and the sweep brings the segment along."""
    if backend != "postgresql":
        pytest.skip("SQLite's writers take turns: the award always re-checks at once")
    ws = brand.workspace_id
    (ann,) = customers(client, brand, "ann")
    with engine.begin() as conn:
        create_segment(conn, ws, "rich", None, "points() >= 100")
    with engine.connect() as resolver:
        holding = resolver.begin()
        resolver.execute(sa.text("SELECT pg_advisory_xact_lock(:k, :w)"), {"k": RESOLUTION, "w": ws})
        with engine.begin() as conn:
            award_points(conn, ws, ann, 100, key="busy", reason="gift", now=NOW)
        holding.rollback()
    assert _members(engine, ws, "rich") == set()
    with engine.connect() as conn:
        due = conn.execute(
            sa.select(audience_rechecks.c.recheck_at).where(
                audience_rechecks.c.workspace_id == ws, audience_rechecks.c.profile_id == ann
            )
        ).scalar()
    assert due == NOW
    audience.sweep(engine, ws, now=NOW + timedelta(seconds=1))
    assert _members(engine, ws, "rich") == {ann}


def test_a_columnar_recompute_gives_the_sql_recomputes_stages_segments_and_rechecks(
    client: TestClient, engine: sa.Engine, brand: Brand, tmp_path: Path
) -> None:
    from lifeloop.lifecycle import service as lifecycle
    from lifeloop.lifecycle.models import lifecycle_rechecks, profile_stages

    ws = brand.workspace_id
    people = _programme(engine, brand, client)
    with engine.begin() as conn:
        for n, text in enumerate(CONDITIONS):
            create_segment(conn, ws, f"s{n}", None, text)
        lifecycle.install_model(conn, ws, STREAK_MODEL)

    def rows(table: sa.Table, *columns: str) -> set[tuple[Any, ...]]:
        with engine.connect() as conn:
            query = sa.select(*(table.c[c] for c in columns)).where(table.c.workspace_id == ws)
            return {tuple(r) for r in conn.execute(query)}

    def state() -> dict[str, Any]:
        return {
            "members": {f"s{n}": _members(engine, ws, f"s{n}") for n in range(len(CONDITIONS))},
            "rechecks": rows(audience_rechecks, "profile_id", "recheck_at"),
            "stages": rows(profile_stages, "profile_id", "stage"),
            "stage_rechecks": rows(lifecycle_rechecks, "profile_id", "recheck_at"),
        }

    recompute_workspace(engine, ws, analytics_path=None, now=NOW)
    by_sql = state()
    for n, text in enumerate(CONDITIONS):
        assert by_sql["members"][f"s{n}"] == {people[name] for name in EXPECTED[text]}, text
    midnight = datetime(2026, 12, 7, 16, 0, tzinfo=UTC)  # ann's streak can break at the next one
    assert (people["ann"], midnight) in by_sql["rechecks"] and (people["ann"], midnight) in by_sql[
        "stage_rechecks"
    ]
    assert (people["ann"], "regular") in by_sql["stages"] and (people["bob"], "casual") in by_sql["stages"]
    with engine.begin() as conn:  # the columnar one starts from nothing
        for table in (segment_members, audience_rechecks, profile_stages, lifecycle_rechecks):
            conn.execute(sa.delete(table).where(table.c.workspace_id == ws))
    recompute_workspace(engine, ws, analytics_path=tmp_path / "copy.duckdb", now=NOW)
    assert state() == by_sql


def test_without_a_tier_programme_the_tier_is_missing_on_every_back_end(
    client: TestClient, engine: sa.Engine, brand: Brand, tmp_path: Path
) -> None:
    ws = brand.workspace_id
    ids = set(customers(client, brand, "ann", "bob"))
    copy = tmp_path / "copy.duckdb"
    sync(engine, copy, workspace_id=ws)
    with engine.connect() as conn, Workspace(engine, ws, copy, now=NOW) as columnar:
        for text, expected in (
            ('tier() == "member"', set()),
            ('not tier() == "vip"', ids),
            ('tier() != "x"', set()),
        ):
            condition = parse(text)
            assert {p for p in ids if evaluate(condition, StoredProfile(conn, ws, p, now=NOW))} == expected
            assert set(matching_profiles(conn, ws, condition, now=NOW)) == expected, text
            assert set(columnar.matching(condition, conn=conn)) == expected, text


STREAK_MODEL = """
key: habit
name: {zh-CN: 习惯, en: Habit}
stages:
  - {key: regular, name: {zh-CN: 常客, en: Regular}, when: 'checkin_streak() >= 3'}
  - {key: casual, name: {zh-CN: 偶尔, en: Casual}, when: "true"}
"""


def test_a_lifecycle_stage_on_the_streak_follows_check_ins_and_breaks_at_midnight(
    client: TestClient, engine: sa.Engine, brand: Brand
) -> None:
    from lifeloop.lifecycle import service as lifecycle

    ws = brand.workspace_id
    (ann,) = customers(client, brand, "ann", now=NOW - 3 * DAY)
    with engine.begin() as conn:
        lifecycle.install_model(conn, ws, STREAK_MODEL)

    def stage() -> str | None:
        with engine.connect() as conn:
            return lifecycle.current_stages(conn, ws, "habit", [ann]).get(ann)

    for back in (2, 1, 0):
        with engine.begin() as conn:
            check_in(conn, ws, ann, now=NOW - back * DAY)
        assert stage() == ("regular" if back == 0 else "casual")
    lifecycle.sweep(engine, ws, now=NOW + 2 * DAY)  # two local midnights later: broken
    assert stage() == "casual"
