"""Segments: validated definitions, live membership (real time, sweep, recompute), dependency order."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from lifeloop.audience import batch, definitions, query, service
from lifeloop.errors import Conflict, InvalidInput, NotFound
from lifeloop.lifecycle import service as lifecycle
from lifeloop.store.schema import utcnow
from tests.audience.helpers import emitted, members, pid, send
from tests.conftest import Brand, snapshot

ORDER = "Order Completed"


def create(engine: sa.Engine, brand: Brand, key: str, condition: str) -> list[service.Change]:
    with engine.begin() as conn:
        _row, definition = definitions.create_segment(conn, brand.workspace_id, key, None, condition)
    return batch.after_definition_change(engine, brand.workspace_id, definition)


def test_membership_is_live_with_enter_and_exit_events(engine: sa.Engine, brand: Brand) -> None:
    base = utcnow()
    send(engine, brand, "early", ((3, ORDER, {"revenue": 50}),), base)
    # created over existing profiles: members at once
    changes = create(engine, brand, "recent_buyers", 'count("Order Completed", within="7d") >= 1')
    assert [(c.key, c.action, c.reason) for c in changes] == [("recent_buyers", "entered", "definition")]
    send(engine, brand, "late", ((0.5, ORDER, {"revenue": 80}),), base)
    send(engine, brand, "browser", ((0.5, "Product Viewed", {}),), base)
    early, late = pid(engine, brand, "early"), pid(engine, brand, "late")
    assert members(engine, brand, "recent_buyers") == {early, late}
    assert emitted(engine, brand, "Segment Entered", "late") == [
        {"segment": "recent_buyers", "segment_id": 1, "reason": "event"}
    ]
    with engine.connect() as conn:
        assert query.member_count(conn, brand.workspace_id, "recent_buyers") == 2

    # Four days on, "early"'s order is 7 days old: only the sweep can notice.
    later = base + timedelta(days=4)
    assert service.sweep(engine, brand.workspace_id, now=later) == 1
    assert members(engine, brand, "recent_buyers") == {late}
    assert emitted(engine, brand, "Segment Exited", "early") == [
        {"segment": "recent_buyers", "segment_id": 1, "reason": "time"}
    ]
    assert batch.recompute_audience(engine, brand.workspace_id, now=later) == []


def test_conditions_read_stages_tags_and_other_segments_in_dependency_order(
    engine: sa.Engine, brand: Brand
) -> None:
    with engine.begin() as conn:
        lifecycle.install_preset(conn, brand.workspace_id, "line")
        definitions.put_tag_rule(conn, brand.workspace_id, "big", 'sum("Order Completed", "revenue") >= 1000')
    create(engine, brand, "loyal", 'in_stage("line", "loyal")')
    create(engine, brand, "a_loyal_big", 'in_segment("loyal") and has_tag("big")')
    base = utcnow()
    send(engine, brand, "whale", ((1, "Channel Followed", {}), (0.5, ORDER, {"revenue": 1500})), base)
    send(engine, brand, "minnow", ((1, "Channel Followed", {}), (0.5, ORDER, {"revenue": 15})), base)
    send(engine, brand, "friend", ((1, "Channel Followed", {}),), base)
    whale, minnow = pid(engine, brand, "whale"), pid(engine, brand, "minnow")
    # "a_loyal_big" sorts first but is evaluated after what it reads: "loyal" and the tag
    assert members(engine, brand, "loyal") == {whale, minnow}
    assert members(engine, brand, "a_loyal_big") == {whale}
    assert lifecycle.recompute(engine, brand.workspace_id) == []
    assert batch.recompute_audience(engine, brand.workspace_id) == []

    before = snapshot(engine)
    with pytest.raises(InvalidInput) as cycle, engine.begin() as conn:
        definitions.update_segment(conn, brand.workspace_id, "loyal", condition='in_segment("a_loyal_big")')
    assert "cycle: segment loyal → segment a_loyal_big → segment loyal" in cycle.value.message
    with pytest.raises(InvalidInput, match="cycle"), engine.begin() as conn:
        definitions.put_tag_rule(conn, brand.workspace_id, "big", 'in_segment("a_loyal_big")')
    with pytest.raises(Conflict, match="read by segment a_loyal_big"), engine.begin() as conn:
        definitions.delete_segment(conn, brand.workspace_id, "loyal")
    with pytest.raises(Conflict, match="read by segment a_loyal_big"), engine.begin() as conn:
        definitions.delete_tag_rule(conn, brand.workspace_id, "big")
    assert snapshot(engine) == before


BAD_SEGMENTS: list[tuple[dict, type[Exception], str, str]] = [
    ({"key": "ok", "condition": 'count("Order Completed") >= "lots"'}, InvalidInput, "condition", "line 1"),
    ({"key": "ok", "condition": "count(“Order”) >= 1"}, InvalidInput, "condition", "column"),
    ({"key": "ok", "condition": ""}, InvalidInput, "condition", "a condition"),
    ({"key": "ok", "condition": 'in_segment("nope")'}, InvalidInput, "condition", 'no segment "nope"'),
    ({"key": "Bad Key", "condition": "true"}, InvalidInput, "key", "lowercase"),
    ({"key": "taken", "condition": "true"}, Conflict, "", "already exists"),
]


@pytest.mark.parametrize(("body", "error", "field", "fragment"), BAD_SEGMENTS)
def test_a_bad_segment_is_refused_and_nothing_changes(
    engine: sa.Engine, brand: Brand, body: dict, error: type[Exception], field: str, fragment: str
) -> None:
    create(engine, brand, "taken", "true")
    before = snapshot(engine)
    with pytest.raises(error) as raised, engine.begin() as conn:
        definitions.create_segment(conn, brand.workspace_id, body["key"], None, body["condition"])
    assert fragment in raised.value.message
    if field:
        assert raised.value.field == field
    assert snapshot(engine) == before


def test_preview_counts_without_writing_and_unknown_segments_are_404(engine: sa.Engine, brand: Brand) -> None:
    base = utcnow()
    for i in range(5):
        send(engine, brand, f"p{i}", ((1, ORDER, {"revenue": 100 * i}),), base)
    before = snapshot(engine)
    with engine.connect() as conn:
        found = query.preview(
            conn, brand.workspace_id, 'sum("Order Completed", "revenue") >= 200', now=utcnow(), limit=2
        )
        assert found["count"] == 3
        assert [p["user_id"] for p in found["profiles"]] == ["p2", "p3"]
        with pytest.raises(InvalidInput):
            query.preview(conn, brand.workspace_id, "true", now=utcnow(), limit=10_000)
        with pytest.raises(NotFound):
            query.member_count(conn, brand.workspace_id, "nope")
    assert snapshot(engine) == before
