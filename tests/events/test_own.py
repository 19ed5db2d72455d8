"""lifeloop's own events: stored on their profiles in one statement, counted once in computed properties."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from lifeloop.events.messages import Message
from lifeloop.events.models import events
from lifeloop.events.own import _listeners, gathered, record_own_events, savepoint, subscribe
from lifeloop.profiles.computed import recompute
from tests.conditions.store import Person, computed_state, seed
from tests.conftest import Brand

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def own(message_id: str, name: str, at: datetime, **properties: object) -> Message:
    return Message(
        type="track", message_id=message_id, timestamp=at, received_at=at, event=name, properties=properties
    )


def test_own_events_are_placed_and_counted_once(engine: sa.Engine, brand: Brand) -> None:
    ws = brand.workspace_id
    with engine.begin() as conn:
        first, second = seed(conn, ws, [Person(), Person()], now=NOW)
        items = [
            (first, own("own:1", "Lifecycle Stage Entered", NOW, stage="new")),
            (second, own("own:2", "Tag Added", NOW - timedelta(days=2), tag="vip", score=3)),
            (first, own("own:3", "Tag Added", NOW - timedelta(days=1), tag="vip", score=4)),
        ]
        record_own_events(conn, ws, items)
        counted = computed_state(conn, ws)
        stored = conn.execute(
            sa.select(events.c.message_id, events.c.profile_id)
            .where(events.c.workspace_id == ws)
            .order_by(events.c.message_id)
        ).all()
        assert [tuple(r) for r in stored] == [("own:1", first), ("own:2", second), ("own:3", first)]
        assert recompute(conn, ws) == 3  # the aggregates kept as they were written equal a rebuild
        assert computed_state(conn, ws) == counted
        sums = {(r[1], r[2], r[4]): r[5] for r in counted["computed_event_sums"]}
        assert sums == {(second, "Tag Added", "score"): 3.0, (first, "Tag Added", "score"): 4.0}

        # The same messages again (a retried write): nothing stored, nothing counted twice.
        record_own_events(conn, ws, items[:2])
        assert conn.execute(sa.select(sa.func.count()).where(events.c.workspace_id == ws)).scalar() == 3
        assert computed_state(conn, ws) == counted


def _stored_ids(conn: sa.Connection, ws: int) -> list[str]:
    query = sa.select(events.c.message_id).where(events.c.workspace_id == ws).order_by(events.c.message_id)
    return list(conn.execute(query).scalars())


def test_gathered_events_are_recorded_once_at_the_end_and_reach_listeners_in_one_batch(
    engine: sa.Engine, brand: Brand
) -> None:
    ws = brand.workspace_id
    batches: list[list[str]] = []

    def listener(_conn: sa.Connection, workspace_id: int, placed: Sequence[tuple[int, Message]]) -> None:
        if workspace_id == ws:
            batches.append([m.message_id for _, m in placed])

    subscribe(listener)
    try:
        with engine.begin() as conn:
            (person,) = seed(conn, ws, [Person()], now=NOW)
            with gathered(conn, ws):
                record_own_events(conn, ws, [(person, own("own:a", "Points Earned", NOW, points=5))])
                with gathered(conn, ws):  # a nested block joins the outer one
                    record_own_events(conn, ws, [(person, own("own:b", "Points Earned", NOW, points=7))])
                with pytest.raises(RuntimeError), savepoint(conn):  # rolled back: its events go too
                    record_own_events(conn, ws, [(person, own("own:c", "Coupon Issued", NOW))])
                    raise RuntimeError("refused")
                assert _stored_ids(conn, ws) == [] and batches == []  # held back until the block ends
            assert _stored_ids(conn, ws) == ["own:a", "own:b"]
            assert batches == [["own:a", "own:b"]]
            sums = {(r[2], r[4]): r[5] for r in computed_state(conn, ws)["computed_event_sums"]}
            assert sums == {("Points Earned", "points"): 12.0}

            with pytest.raises(RuntimeError), gathered(conn, ws):  # a block that raises records nothing
                record_own_events(conn, ws, [(person, own("own:d", "Points Earned", NOW, points=1))])
                raise RuntimeError("failed")
            record_own_events(conn, ws, [(person, own("own:e", "Points Earned", NOW, points=1))])
            assert _stored_ids(conn, ws) == ["own:a", "own:b", "own:e"]  # and recording goes on directly
    finally:
        _listeners.remove(listener)
