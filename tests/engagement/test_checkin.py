"""Daily check-in on the workspace's calendar (Asia/Taipei here): streaks across days and around
midnight, streak bonuses in a cycle, make-up check-ins paid in points (and refused when short or out
of reach, changing nothing), retries with the same key, and check-ins requested by an ingested event."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from lifeloop.engagement.points.checkin import Checkin, check_in, checkin_streaks, make_up
from lifeloop.engagement.points.ledger import award_points, balance
from lifeloop.engagement.points.settings import save_section
from lifeloop.errors import Conflict, InvalidInput
from lifeloop.events.models import events
from tests.conftest import Brand, snapshot

from .points_helpers import assert_ledger_balances, customers, ingest, pid, track


def taipei(day: str, hour: int, minute: int = 0) -> datetime:
    """A wall-clock time in Asia/Taipei (UTC+8, no daylight saving) as aware UTC."""
    local = datetime.fromisoformat(f"{day}T{hour:02d}:{minute:02d}")
    return (local - timedelta(hours=8)).replace(tzinfo=UTC)


def _in(engine: sa.Engine, ws: int, profile: int, now: datetime) -> Checkin:
    with engine.begin() as conn:
        return check_in(conn, ws, profile, now=now)


def _streak(engine: sa.Engine, ws: int, profile: int, now: datetime) -> int:
    with engine.connect() as conn:
        return checkin_streaks(conn, ws, [profile], now=now)[profile]


def _balance(engine: sa.Engine, ws: int, profile: int, now: datetime) -> int:
    with engine.connect() as conn:
        return balance(conn, ws, profile, now=now)


def test_streaks_follow_the_workspace_calendar_around_midnight(
    client: TestClient, engine: sa.Engine, brand: Brand
) -> None:
    ws = brand.workspace_id
    (ann,) = customers(client, brand, "ann", now=taipei("2026-11-30", 8))
    late = _in(engine, ws, ann, taipei("2026-11-30", 23, 50))  # 15:50 UTC
    after_midnight = _in(engine, ws, ann, taipei("2026-12-01", 0, 5))  # 16:05 UTC, the same UTC day
    assert (late.day, late.streak, late.points) == (date(2026, 11, 30), 1, 5)
    assert (after_midnight.day, after_midnight.streak) == (date(2026, 12, 1), 2)
    before = snapshot(engine)
    same_day = _in(engine, ws, ann, taipei("2026-12-01", 23, 59))
    assert same_day.already and same_day.streak == 2 and snapshot(engine) == before
    third = _in(engine, ws, ann, taipei("2026-12-02", 9))
    assert (third.streak, third.points) == (3, 5 + 10)  # the day-3 bonus
    # a streak holds through the next day until its midnight, then breaks
    assert _streak(engine, ws, ann, taipei("2026-12-03", 23, 59)) == 3
    assert _streak(engine, ws, ann, taipei("2026-12-04", 0, 0)) == 0
    fresh = _in(engine, ws, ann, taipei("2026-12-04", 0, 1))
    assert fresh.streak == 1 and _streak(engine, ws, ann, taipei("2026-12-04", 12)) == 1
    assert _balance(engine, ws, ann, taipei("2026-12-04", 12)) == 5 * 4 + 10
    with engine.connect() as conn:
        recorded = conn.execute(
            sa.select(events.c.properties)
            .where(events.c.workspace_id == ws, events.c.profile_id == ann, events.c.event == "Checked In")
            .order_by(events.c.id)
        ).all()
    assert [(r.properties["day"], r.properties["streak"]) for r in recorded] == [
        ("2026-11-30", 1),
        ("2026-12-01", 2),
        ("2026-12-02", 3),
        ("2026-12-04", 1),
    ]
    assert_ledger_balances(engine, ws, ann)


def test_streak_bonuses_run_in_a_cycle_that_restarts_after_the_longest_day(
    client: TestClient, engine: sa.Engine, brand: Brand
) -> None:
    ws = brand.workspace_id
    (ann,) = customers(client, brand, "ann", now=taipei("2026-11-01", 8))
    with engine.begin() as conn:
        save_section(conn, ws, "checkin", {"streak_rewards": {"2": 3, "4": 10}}, now=taipei("2026-11-01", 8))
        save_section(conn, ws, "rules", {"checkin": {"points": 1}}, now=taipei("2026-11-01", 8))
    done = [_in(engine, ws, ann, taipei(f"2026-11-{d:02d}", 20)) for d in range(1, 10)]
    assert [c.streak for c in done] == list(range(1, 10))
    assert [c.points for c in done] == [1, 4, 1, 11, 1, 4, 1, 11, 1]


def test_a_make_up_is_paid_in_points_mends_the_streak_and_is_idempotent(
    client: TestClient, engine: sa.Engine, brand: Brand
) -> None:
    ws = brand.workspace_id
    ann, bob = customers(client, brand, "ann", "bob", now=taipei("2026-12-01", 8))
    for day in ("2026-12-01", "2026-12-02", "2026-12-04"):  # the 3rd is missed
        _in(engine, ws, ann, taipei(day, 10))
    now = taipei("2026-12-04", 11)
    with engine.begin() as conn:
        award_points(conn, ws, ann, 30, key="gift", reason="gift", now=now)
    assert _streak(engine, ws, ann, now) == 1 and _balance(engine, ws, ann, now) == 15 + 30
    with engine.begin() as conn:
        mended = make_up(conn, ws, ann, date(2026, 12, 3), key="makeup-1", now=now)
    assert (mended.kind, mended.streak, mended.cost, mended.points) == ("makeup", 3, 20, 0)
    assert _streak(engine, ws, ann, now) == 4  # the 4th now counts on from the 3rd
    assert _balance(engine, ws, ann, now) == 25
    before = snapshot(engine)
    with engine.begin() as conn:  # a retried request: the first result, nothing paid twice
        again = make_up(conn, ws, ann, date(2026, 12, 3), key="makeup-1", now=now + timedelta(minutes=1))
    assert again.already and again.streak == 3 and snapshot(engine) == before
    refusals = [
        (ann, date(2026, 12, 3), "makeup-2", Conflict, "already checked in on 2026-12-03"),
        (ann, date(2026, 11, 30), "makeup-3", InvalidInput, "only the last 3 days can be made up"),
        (ann, date(2026, 12, 4), "makeup-4", InvalidInput, "not a past day"),
        (ann, date(2026, 12, 5), "makeup-5", InvalidInput, "not a past day"),
        (bob, date(2026, 12, 3), "makeup-6", Conflict, "the balance is 0 points, 20 short"),
        (bob, date(2026, 12, 3), "makeup-1", Conflict, "already used"),  # another customer's key
    ]
    for who, missed, key, error, reason in refusals:
        with pytest.raises(error, match=reason), engine.begin() as conn:
            make_up(conn, ws, who, missed, key=key, now=now)
    assert snapshot(engine) == before
    assert assert_ledger_balances(engine, ws, ann) == {"balance": 25, "earned": 45, "spent": 20, "expired": 0}


def test_a_check_in_requested_by_the_brands_app_through_ingest(
    client: TestClient, engine: sa.Engine, brand: Brand
) -> None:
    ws = brand.workspace_id
    tap = taipei("2026-12-01", 23, 58)
    ingest(client, brand, [track("ann", "Check In Requested", "c-1", at=tap)], now=tap + timedelta(minutes=3))
    ann = pid(client, brand, "ann")
    assert _streak(engine, ws, ann, tap) == 1  # the day it was tapped, though placed after midnight
    ingest(
        client,
        brand,
        [
            track("ann", "Check In Requested", "c-2", at=tap + timedelta(minutes=1)),  # the same day again
            track(
                "ann", "Checked In", "c-3", at=taipei("2026-12-02", 9)
            ),  # lifeloop's own name: not a request
            track("bob", "Check In Requested", "c-4", at=taipei("2026-12-02", 7)),  # placed 2 h late: dropped
        ],
        now=taipei("2026-12-02", 9, 30),
    )
    bob = pid(client, brand, "bob")
    now = taipei("2026-12-02", 9, 30)
    assert _streak(engine, ws, ann, now) == 1 and _streak(engine, ws, bob, now) == 0
    assert _balance(engine, ws, ann, now) == 5
    ingest(client, brand, [track("ann", "Check In Requested", "c-5", at=now)], now=now)
    assert _streak(engine, ws, ann, now) == 2
    with engine.begin() as conn:
        save_section(conn, ws, "checkin", {"enabled": False}, now=now)
    ingest(client, brand, [track("bob", "Check In Requested", "c-6", at=now)], now=now)
    assert _streak(engine, ws, bob, now) == 0
    with pytest.raises(Conflict, match="turned off"):
        _in(engine, ws, bob, now)
