"""The points ledger through its service: earning once per key, spending first-expiring lots first,
refusals that change nothing, expiry by the sweep with its events, validity rules in the workspace's
time zone, and the batch reads other parts use (balances, points earned over a window)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from lifeloop.engagement.points import hooks
from lifeloop.engagement.points.ledger import (
    PointsEntry,
    award_points,
    balance,
    balances,
    earned_between,
    history,
    spend_points,
)
from lifeloop.engagement.points.models import points_allocations, points_lots
from lifeloop.engagement.points.settings import save_section
from lifeloop.engagement.sweeps import sweep as engagement_sweep
from lifeloop.errors import Conflict, InvalidInput, NotFound
from lifeloop.events.models import events
from tests.conftest import Brand, snapshot

from .points_helpers import NOW, assert_ledger_balances, customers


def _award(
    engine: sa.Engine,
    ws: int,
    pid: int,
    points: int,
    key: str,
    *,
    now: datetime = NOW,
    expires_at: datetime | None = None,
) -> PointsEntry:
    with engine.begin() as conn:
        return award_points(conn, ws, pid, points, key=key, reason="test", now=now, expires_at=expires_at)


def _spend(
    engine: sa.Engine, ws: int, pid: int, points: int, key: str, *, now: datetime = NOW
) -> PointsEntry:
    with engine.begin() as conn:
        return spend_points(conn, ws, pid, points, key=key, reason="test", now=now)


def _balance(engine: sa.Engine, ws: int, pid: int, now: datetime = NOW) -> int:
    with engine.connect() as conn:
        return balance(conn, ws, pid, now=now)


def _events(engine: sa.Engine, ws: int, pid: int, name: str) -> list[dict[str, object]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(events.c.properties)
            .where(events.c.workspace_id == ws, events.c.profile_id == pid, events.c.event == name)
            .order_by(events.c.id)
        )
        return [dict(r.properties) for r in rows]


def test_an_award_happens_once_per_key(client: TestClient, engine: sa.Engine, brand: Brand) -> None:
    ws = brand.workspace_id
    (ann,) = customers(client, brand, "ann")
    first = _award(engine, ws, ann, 50, "welcome:ann")
    before = snapshot(engine)
    again = _award(engine, ws, ann, 50, "welcome:ann")
    assert again == first and snapshot(engine) == before  # the retry returns the first entry, writes nothing
    assert _balance(engine, ws, ann) == 50
    with pytest.raises(Conflict, match="already used"):  # the same key for another request is a mistake
        _award(engine, ws, ann, 70, "welcome:ann")
    assert _events(engine, ws, ann, "Points Earned") == [
        {"points": 50, "balance": 50, "reason": "test", "expires_at": (NOW + timedelta(days=365)).isoformat()}
    ]
    assert assert_ledger_balances(engine, ws, ann) == {"balance": 50, "earned": 50, "spent": 0, "expired": 0}


def test_a_spend_takes_the_lot_that_expires_first_then_the_oldest(
    client: TestClient, engine: sa.Engine, brand: Brand
) -> None:
    ws = brand.workspace_id
    (ann,) = customers(client, brand, "ann")
    never = datetime(2099, 1, 1, tzinfo=UTC)
    oldest_lasting = _award(engine, ws, ann, 10, "a", now=NOW - timedelta(days=3), expires_at=never)
    late = _award(engine, ws, ann, 10, "b", now=NOW - timedelta(days=2), expires_at=NOW + timedelta(days=90))
    soon = _award(engine, ws, ann, 10, "c", now=NOW - timedelta(days=1), expires_at=NOW + timedelta(days=10))
    newer_lasting = _award(engine, ws, ann, 10, "d", expires_at=never)
    spent = _spend(engine, ws, ann, 25, "buy-1")
    assert spent.balance_after == 15
    with engine.connect() as conn:
        lots = conn.execute(
            sa.select(points_lots.c.entry_id, points_lots.c.remaining).where(points_lots.c.workspace_id == ws)
        ).all()
        taken = conn.execute(
            sa.select(points_allocations.c.lot_id, points_allocations.c.points).where(
                points_allocations.c.workspace_id == ws, points_allocations.c.entry_id == spent.id
            )
        ).all()
    remaining = {entry: left for entry, left in lots}
    # the soonest-expiring lot goes first, then the next to expire, then the oldest of those that last
    assert remaining == {soon.id: 0, late.id: 0, oldest_lasting.id: 5, newer_lasting.id: 10}
    assert len(taken) == 3
    _spend(engine, ws, ann, 6, "buy-2")
    with engine.connect() as conn:
        left: dict[int, int] = dict(
            conn.execute(
                sa.select(points_lots.c.entry_id, points_lots.c.remaining).where(
                    points_lots.c.workspace_id == ws
                )
            ).all()
        )
    assert left[oldest_lasting.id] == 0 and left[newer_lasting.id] == 9
    assert assert_ledger_balances(engine, ws, ann)["balance"] == 9


def test_a_spend_beyond_the_balance_is_refused_and_changes_nothing(
    client: TestClient, engine: sa.Engine, brand: Brand
) -> None:
    ws = brand.workspace_id
    ann, bob = customers(client, brand, "ann", "bob")
    _award(engine, ws, ann, 30, "a")
    before = snapshot(engine)
    with pytest.raises(Conflict, match="the balance is 30 points, 20 short of the 50 to spend"):
        _spend(engine, ws, ann, 50, "too-much")
    with pytest.raises(Conflict, match="the balance is 0 points"):
        _spend(engine, ws, bob, 1, "nothing")
    for points in (0, -5, 10**9):
        with pytest.raises(InvalidInput, match="points must be a whole number"):
            _spend(engine, ws, ann, points, f"bad-{points}")
    with pytest.raises(InvalidInput, match="key"):
        _spend(engine, ws, ann, 1, "")
    with pytest.raises(InvalidInput, match="expires_at must be later"):
        _award(engine, ws, ann, 1, "past", expires_at=NOW - timedelta(seconds=1))
    with pytest.raises(NotFound):
        _award(engine, ws, 999_999, 1, "nobody")
    assert snapshot(engine) == before
    # the refused key is still free: a later spend with it, once the points are there, goes through
    _award(engine, ws, ann, 20, "b")
    assert _spend(engine, ws, ann, 50, "too-much").balance_after == 0
    assert assert_ledger_balances(engine, ws, ann)["spent"] == 50


def test_the_sweep_expires_due_lots_in_batches_with_events(
    client: TestClient, engine: sa.Engine, brand: Brand, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = brand.workspace_id
    people = customers(client, brand, "a", "b", "c", "d", "e")
    for n, person in enumerate(people):
        _award(engine, ws, person, 10, f"soon-{n}", expires_at=NOW + timedelta(days=1))
        _award(engine, ws, person, 5, f"later-{n}", expires_at=NOW + timedelta(days=30))
    _spend(engine, ws, people[0], 4, "partly")  # the soonest lot keeps 6
    monkeypatch.setattr(hooks, "SWEEP_BATCH", 2)
    assert hooks.sweep(engine, NOW) == 0  # nothing is due yet
    due = NOW + timedelta(days=1)
    # past its date, a lot no longer counts, before any sweep has come
    assert _balance(engine, ws, people[0], due) == 5 and _balance(engine, ws, people[0], NOW) == 11
    assert engagement_sweep(engine, due) == 5  # through the programme's sweep, two customers at a time
    assert engagement_sweep(engine, due) == 0
    assert _events(engine, ws, people[0], "Points Expired") == [
        {"points": 6, "balance": 5, "reason": "points reached their expiry date"}
    ]
    for person in people:
        totals = assert_ledger_balances(engine, ws, person)
        assert totals["balance"] == 5 and _balance(engine, ws, person, due) == 5
    assert assert_ledger_balances(engine, ws, people[0])["expired"] == 6
    # a spend after the date never takes expired points, sweep or no sweep
    _award(engine, ws, people[1], 10, "third", expires_at=due + timedelta(days=1))
    with pytest.raises(Conflict, match="the balance is 5 points"):
        _spend(engine, ws, people[1], 6, "late", now=due + timedelta(days=2))
    spent = _spend(engine, ws, people[1], 5, "late-ok", now=due + timedelta(days=2))
    assert spent.balance_after == 0
    assert assert_ledger_balances(engine, ws, people[1])["expired"] == 20


def test_points_valid_to_the_year_end_expire_at_midnight_in_the_workspace_zone(
    client: TestClient, engine: sa.Engine, brand: Brand
) -> None:
    ws = brand.workspace_id
    (ann,) = customers(client, brand, "ann")
    with engine.begin() as conn:
        save_section(conn, ws, "rules", {"validity": {"kind": "year_end"}}, now=NOW)
    new_year_taipei = datetime(2026, 12, 31, 16, 0, tzinfo=UTC)  # 2027-01-01 00:00 in Asia/Taipei
    last_minute = _award(engine, ws, ann, 10, "a", now=new_year_taipei - timedelta(minutes=1))
    first_minute = _award(engine, ws, ann, 10, "b", now=new_year_taipei)
    assert last_minute.expires_at == new_year_taipei
    assert first_minute.expires_at == datetime(2027, 12, 31, 16, 0, tzinfo=UTC)
    with engine.begin() as conn:
        save_section(conn, ws, "rules", {"validity": {"kind": "never"}}, now=NOW)
    assert _award(engine, ws, ann, 10, "c").expires_at is None


def test_balances_and_points_earned_over_a_window_for_many_customers(
    client: TestClient, engine: sa.Engine, brand: Brand
) -> None:
    ws = brand.workspace_id
    ann, bob, cat = customers(client, brand, "ann", "bob", "cat")
    _award(engine, ws, ann, 100, "a1", now=NOW - timedelta(days=40))
    _award(engine, ws, ann, 30, "a2", now=NOW - timedelta(days=5))
    _spend(engine, ws, ann, 50, "a3")
    _award(engine, ws, bob, 7, "b1", now=NOW - timedelta(days=1))
    with engine.connect() as conn:
        assert balances(conn, ws, [ann, bob, cat], now=NOW) == {ann: 80, bob: 7, cat: 0}
        window = earned_between(conn, ws, [ann, bob, cat], NOW - timedelta(days=30), NOW)
        assert window == {ann: 30, bob: 7, cat: 0}  # what was spent since does not lower it
        entries = history(conn, ws, ann, limit=2)
        assert [(e.kind, e.points) for e in entries] == [("spend", 50), ("earn", 30)]
        older = history(conn, ws, ann, before=entries[-1].id)
        assert [(e.kind, e.points) for e in older] == [("earn", 100)]
