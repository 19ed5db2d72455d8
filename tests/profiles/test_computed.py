"""Computed properties: incremental maintenance equals a batch recompute; merges fold aggregates."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from lifeloop.conditions import StoredProfile, evaluate, matching_profiles, parse
from lifeloop.profiles.computed import (
    ResolvedEvent,
    apply_resolved_events,
    computed_event_days,
    event_name,
    is_interaction_name,
    merge_profiles,
    recompute,
)
from lifeloop.profiles.models import profiles
from tests.conditions.store import Person, computed_state, seed
from tests.conftest import Brand, make_brand

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def _history(offset_days: float, *events: tuple[str, str | None, dict | None]) -> list:
    at = NOW - timedelta(days=offset_days)
    return [(t, n, at + timedelta(minutes=i), p) for i, (t, n, p) in enumerate(events)]


PEOPLE = [
    Person(
        events=[
            *_history(40, ("track", "Order Completed", {"revenue": 1200, "currency": "TWD"})),
            *_history(3, ("track", "Order Completed", {"revenue": 300.5, "flag": True})),
            *_history(2, ("page", None, {"category": "booking"}), ("page", None, {"category": "booking"})),
            *_history(1, ("track", "Message Delivered", None), ("identify", None, None)),
        ],
        traits={"city": "Taipei"},
    ),
    Person(events=_history(31, ("track", "Menu Clicked", None), ("track", "Menu Clicked", {"item": 3}))),
    Person(events=[]),
]


def test_event_names_and_interactions() -> None:
    cases = [
        ("track", "Order Completed", "Order Completed", True),
        ("page", None, "Page Viewed", True),
        ("screen", None, "Screen Viewed", True),
        ("identify", None, "$identify", False),
        ("alias", None, "$alias", False),
        ("track", "Message Delivered", "Message Delivered", False),
        ("track", "Lifecycle Stage Entered", "Lifecycle Stage Entered", False),
    ]
    for type_, event, name, interaction in cases:
        assert event_name(type_, event) == name
        assert is_interaction_name(name) is interaction


def test_incremental_equals_recompute(engine: sa.Engine, brand: Brand) -> None:
    ws = brand.workspace_id
    with engine.begin() as conn:
        seed(conn, ws, PEOPLE, now=NOW)
        incremental = computed_state(conn, ws)
        assert incremental["computed_event_days"], "the seed applied nothing"
        assert recompute(conn, ws) == sum(len(p.events) for p in PEOPLE)
        assert computed_state(conn, ws) == incremental


def test_recompute_of_one_workspace_keeps_the_others(engine: sa.Engine, brand: Brand) -> None:
    # Alone in the tables, a workspace's rows are cleared in one go on SQLite; here it is not alone.
    other = make_brand(engine, "other-brand").workspace_id
    with engine.begin() as conn:
        seed(conn, brand.workspace_id, PEOPLE, now=NOW)
        seed(conn, other, PEOPLE[:1], now=NOW)
        kept = computed_state(conn, other)
        assert kept["computed_event_days"]
        recompute(conn, brand.workspace_id)
        assert computed_state(conn, other) == kept


def test_applying_in_batches_equals_applying_at_once(engine: sa.Engine, brand: Brand) -> None:
    ws = brand.workspace_id
    with engine.begin() as conn:
        [pid, *_] = seed(conn, ws, [Person()], now=NOW)
        evs = [ResolvedEvent(pid, t, n, ts, p) for t, n, ts, p in PEOPLE[0].events]
        for ev in evs:
            apply_resolved_events(conn, ws, [ev])
        one_by_one = computed_state(conn, ws)
        recompute(conn, ws)  # the seed stored no events for this person: recompute empties it
        assert computed_state(conn, ws) == {k: [] for k in one_by_one}
        apply_resolved_events(conn, ws, evs)
        assert computed_state(conn, ws) == one_by_one


def test_reading_the_computed_properties(engine: sa.Engine, brand: Brand) -> None:
    ws = brand.workspace_id
    cases = [  # condition, expected for people 0, 1, 2
        ('sum("Order Completed", "revenue") == 1500.5', [True, False, False]),
        ('sum("Order Completed", "revenue", within="7d") == 300.5', [True, False, False]),
        (
            'count("Page Viewed", within="7d", where=property.category == "booking") >= 2',
            [True, False, False],
        ),
        ("days_since(last_interaction) == 1", [True, False, False]),  # 2 days less a minute
        ("days_since(last_seen) == 0", [True, False, False]),
        ("days_since(first_seen) >= 31", [True, True, False]),
        ("not days_since(first_seen) >= 0", [False, False, True]),
        ('count(interaction, within="30d") == 3', [True, False, False]),
        ("active_days() == 3", [True, False, False]),
        ("active_days() == 1", [False, True, False]),
        ('count("Menu Clicked") == 2 and sum("Menu Clicked", "item") == 3', [False, True, False]),
        ('last("Order Completed") > first("Order Completed")', [True, False, False]),
    ]
    with engine.begin() as conn:
        ids = seed(conn, ws, PEOPLE, now=NOW)
        for text, expected in cases:
            condition = parse(text)
            want = {pid for pid, yes in zip(ids, expected, strict=True) if yes}
            assert set(matching_profiles(conn, ws, condition, now=NOW)) == want, text
            assert {
                pid for pid in ids if evaluate(condition, StoredProfile(conn, ws, pid, now=NOW))
            } == want, text


def test_merge_folds_the_losers_aggregates_into_the_winner(engine: sa.Engine, brand: Brand) -> None:
    ws = brand.workspace_id
    with engine.begin() as conn:
        winner, loser, _ = seed(conn, ws, PEOPLE, now=NOW)
        expected_state = computed_state(conn, ws)
        merge_profiles(conn, ws, loser=loser, winner=winner)
        # The same as if every event had been the winner's from the start.
        conn.execute(
            sa.update(profiles)
            .where(profiles.c.workspace_id == ws, profiles.c.id == loser)
            .values(merged_into=winner)
        )
        merged_state = computed_state(conn, ws)
        assert all(row[1] != loser for rows in merged_state.values() for row in rows)
        everyone = [ResolvedEvent(winner, *e) for p in PEOPLE[:2] for e in p.events]
        for table in ("computed_event_days", "computed_event_sums", "computed_event_times"):
            conn.execute(
                sa.delete(sa.table(table, sa.column("workspace_id"))).where(sa.column("workspace_id") == ws)
            )
        apply_resolved_events(conn, ws, everyone)
        assert computed_state(conn, ws) == merged_state
        assert merged_state != expected_state
        total = conn.execute(
            sa.select(sa.func.sum(computed_event_days.c.event_count)).where(
                computed_event_days.c.workspace_id == ws
            )
        ).scalar()
        assert total == len(everyone)
        assert matching_profiles(conn, ws, parse('count("Menu Clicked") == 2'), now=NOW) == [winner]
