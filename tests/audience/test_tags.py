"""Rule, event and manual tags on stored profiles: real time, sweep and batch recompute agree."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from lifeloop.audience import batch, definitions, service
from lifeloop.audience.models import audience_rechecks
from lifeloop.conditions import StoredProfile, evaluate, matching_profiles, parse
from lifeloop.errors import Conflict, InvalidInput, NotFound
from lifeloop.lifecycle import service as lifecycle
from lifeloop.store.schema import utcnow
from tests.audience.helpers import History, emitted, pid, send, tags
from tests.conftest import Brand, snapshot

ORDER = "Order Completed"
CHAT = "Message Received"

# wecom vip (seed 001): sum(revenue, 365d) >= 2000 or count(interaction, 30d) >= 20
VIP_CASES: list[tuple[str, History, bool]] = [
    ("one big order", ((10, ORDER, {"revenue": 2500}),), True),
    ("big order over a year ago", ((400, ORDER, {"revenue": 2500}),), False),
    ("two orders add up", ((200, ORDER, {"revenue": 1200}), (5, ORDER, {"revenue": 800})), True),
    ("just short", ((5, ORDER, {"revenue": 1999.5}),), False),
    ("20 chats in 30 days", tuple((i + 0.5, CHAT, {}) for i in range(20)), True),
    ("19 chats in 30 days", tuple((i + 0.5, CHAT, {}) for i in range(19)), False),
    ("20 chats, some too old", tuple((i * 2 + 0.5, CHAT, {}) for i in range(20)), False),
    ("spend that leaves the window tomorrow", ((364.5, ORDER, {"revenue": 2000}),), True),
]


def test_rule_tags_follow_their_rule_in_real_time_sweep_and_recompute(
    engine: sa.Engine, brand: Brand
) -> None:
    with engine.begin() as conn:
        definitions.install_preset(conn, brand.workspace_id, "wecom")
    base = utcnow()
    users = [f"u{i}" for i in range(len(VIP_CASES))]
    for user, (_, history, _) in zip(users, VIP_CASES, strict=True):
        send(engine, brand, user, history, base)

    expected = {user: vip for user, (_, _, vip) in zip(users, VIP_CASES, strict=True)}
    assert {u: "vip" in tags(engine, brand, u) for u in users} == expected
    for user, vip in expected.items():
        added = emitted(engine, brand, "Tag Added", user)
        assert added == (
            [{"tag": "vip", "kind": "rule", "reason": "event", "expires_at": None}] if vip else []
        )
        # the seed's advisor task is a real task made by an advisors rule, not a bare event of the tag
        assert emitted(engine, brand, "Advisor Task Created", user) == []

    # The batch path (one SQL query per rule) agrees, so it changes nothing.
    assert batch.recompute_audience(engine, brand.workspace_id, now=utcnow()) == []
    vips = {pid(engine, brand, u) for u, vip in expected.items() if vip}
    with engine.connect() as conn:
        rule = parse(definitions.get_tag_rule(conn, brand.workspace_id, "vip")["condition"])
        assert set(matching_profiles(conn, brand.workspace_id, rule, now=utcnow())) == vips

    # Nothing is due now; a day later only the order leaving its 365-day window moves the tag.
    assert service.sweep(engine, brand.workspace_id, now=utcnow()) == 0
    later = base + timedelta(days=1)
    service.sweep(engine, brand.workspace_id, now=later)
    leaving = users[-1]
    assert "vip" not in tags(engine, brand, leaving)
    assert emitted(engine, brand, "Tag Removed", leaving) == [
        {"tag": "vip", "kind": "rule", "reason": "time"}
    ]
    assert {u: "vip" in tags(engine, brand, u) for u in users[:-1]} == {
        u: v for u, v in expected.items() if u != leaving
    }
    assert batch.recompute_audience(engine, brand.workspace_id, now=later) == []


def test_a_rule_tag_read_by_the_lifecycle_model_moves_the_stage(engine: sa.Engine, brand: Brand) -> None:
    """wecom's ``mature`` stage reads tag ``vip``: stages follow the tag in the same batch."""
    with engine.begin() as conn:
        lifecycle.install_preset(conn, brand.workspace_id, "wecom")
        definitions.install_preset(conn, brand.workspace_id, "wecom")
    send(engine, brand, "big", ((1, "Channel Followed", {}), (0.5, ORDER, {"revenue": 3000})), utcnow())
    with engine.connect() as conn:
        stages = lifecycle.current_stages(conn, brand.workspace_id, "wecom", [pid(engine, brand, "big")])
    assert list(stages.values()) == ["mature"]
    assert lifecycle.recompute(engine, brand.workspace_id) == []
    assert batch.recompute_audience(engine, brand.workspace_id) == []


FOLLOW = {"channel": "line", "source": "ad", "entry_page": "spring-sale"}
# seed 000 event tags: (history, tag → ttl in days after the latest matching event, or None)
EVENT_TAG_CASES: list[tuple[str, History, dict[str, float | None]]] = [
    (
        "followed from an ad",
        ((3, "Channel Followed", FOLLOW),),
        {"source:ad": None, "entry_page:spring-sale": None},
    ),
    (
        "menu and page interest",
        ((2, "Menu Clicked", {"item": "skincare"}), (1, "Page Viewed", {"category": "booking"})),
        {"interest:skincare": 90 - 2, "interest:booking": 90 - 1},
    ),
    (
        "intent refreshed by a second keyword",
        ((10, CHAT, {"keyword": "price"}), (1, CHAT, {"keyword": "price"})),
        {"intent:price": 14 - 1},
    ),
    ("intent that has run out", ((20, CHAT, {"keyword": "price"}),), {}),
    (
        "product interest",
        ((4, "Product Viewed", {"category": "serum"}), (3, "Product Added", {"category": "mask"})),
        {"product:serum": 30 - 4, "product:mask": 30 - 3},
    ),
    ("no property, no tag", ((1, "Menu Clicked", {}), (1, CHAT, {"text": "hi"})), {}),
]


def test_event_tags_of_seed_000_expire_and_refresh(engine: sa.Engine, brand: Brand) -> None:
    with engine.begin() as conn:
        installed = definitions.install_preset(conn, brand.workspace_id, "line")
    assert installed == {"event_tag_rules": 8, "tag_rules": 0}
    base = utcnow()
    for n, (_, history, _) in enumerate(EVENT_TAG_CASES):
        send(engine, brand, f"e{n}", history, base)
    for n, (situation, _, expected) in enumerate(EVENT_TAG_CASES):
        held = tags(engine, brand, f"e{n}")
        want = {t: ("event", None if d is None else base + timedelta(days=d)) for t, d in expected.items()}
        assert held == want, situation
        # one Tag Added per tag, not one per re-application
        assert sorted(e["tag"] for e in emitted(engine, brand, "Tag Added", f"e{n}")) == sorted(expected)

    assert batch.recompute_audience(engine, brand.workspace_id, now=utcnow()) == []
    # 14 days on, the refreshed intent has run out: the sweep removes it and says so.
    later = base + timedelta(days=14)
    service.sweep(engine, brand.workspace_id, now=later)
    assert "intent:price" not in tags(engine, brand, "e2")
    assert emitted(engine, brand, "Tag Removed", "e2") == [
        {"tag": "intent:price", "kind": "event", "reason": "expired"}
    ]
    assert "interest:skincare" in tags(engine, brand, "e1")
    assert batch.recompute_audience(engine, brand.workspace_id, now=later) == []


def test_manual_tags_with_expiry_count_until_they_run_out(engine: sa.Engine, brand: Brand) -> None:
    base = utcnow()
    send(engine, brand, "m", ((1, CHAT, {}),), base)
    profile = pid(engine, brand, "m")
    with engine.begin() as conn:
        changes = service.add_manual_tag(
            conn, brand.workspace_id, profile, "trial", expires_at=base + timedelta(days=2), now=base
        )
    assert [(c.key, c.action) for c in changes] == [("trial", "added")]
    with engine.connect() as conn:
        for at, holds in ((base + timedelta(days=1), True), (base + timedelta(days=2, seconds=1), False)):
            view = StoredProfile(conn, brand.workspace_id, profile, now=at)
            assert evaluate(parse('has_tag("trial")'), view) is holds
            assert (
                profile in matching_profiles(conn, brand.workspace_id, parse('has_tag("trial")'), now=at)
            ) is holds
        due = conn.execute(
            sa.select(audience_rechecks.c.recheck_at).where(
                audience_rechecks.c.workspace_id == brand.workspace_id
            )
        ).scalar_one()
        assert due == base + timedelta(days=2)
    assert service.sweep(engine, brand.workspace_id, now=base + timedelta(days=3)) == 1
    assert tags(engine, brand, "m") == {}
    assert emitted(engine, brand, "Tag Removed", "m") == [
        {"tag": "trial", "kind": "manual", "reason": "expired"}
    ]


def test_manual_tag_errors_change_nothing(engine: sa.Engine, brand: Brand) -> None:
    with engine.begin() as conn:
        definitions.put_tag_rule(conn, brand.workspace_id, "buyer", 'count("Order Completed") >= 1')
    send(engine, brand, "b", ((1, ORDER, {}),), utcnow())
    profile = pid(engine, brand, "b")
    before = snapshot(engine)
    cases: list[tuple[str, object, type[Exception], str]] = [
        ("add", ("", None), InvalidInput, "tag"),
        ("add", (" padded", None), InvalidInput, "tag"),
        ("add", ("x" * 129, None), InvalidInput, "tag"),
        ("add", ("ok", utcnow() - timedelta(seconds=1)), InvalidInput, "expires_at"),
        ("add-to", (999_999, "ok"), NotFound, ""),
        ("remove", ("never-had",), NotFound, ""),
        ("remove", ("buyer",), Conflict, ""),
    ]
    for action, args, error, field in cases:
        with pytest.raises(error) as raised, engine.begin() as conn:
            if action == "add":
                tag, expires = args  # type: ignore[misc]
                service.add_manual_tag(conn, brand.workspace_id, profile, tag, expires_at=expires)
            elif action == "add-to":
                other, tag = args  # type: ignore[misc]
                service.add_manual_tag(conn, brand.workspace_id, other, tag)
            else:
                service.remove_manual_tag(conn, brand.workspace_id, profile, args[0])  # type: ignore[index]
        if field:
            assert raised.value.field == field
    assert snapshot(engine) == before


def test_a_merge_keeps_the_tags_of_both_on_the_survivor(engine: sa.Engine, brand: Brand) -> None:
    with engine.begin() as conn:
        definitions.install_preset(conn, brand.workspace_id, "line")
    base = utcnow()
    send(engine, brand, "buyer", ((1, "Product Viewed", {"category": "serum"}),), base)
    from lifeloop.events.messages import parse_message
    from lifeloop.events.service import ingest
    from lifeloop.profiles.resolver import resolve_pending
    from lifeloop.workspaces.models import SourceKey

    key = SourceKey(workspace_id=brand.workspace_id, source_id=brand.source_id)
    follow = {"type": "track", "event": "Channel Followed", "anonymousId": "friend", "properties": FOLLOW}
    ingest(engine, key, [parse_message(follow, received_at=base)])
    resolve_pending(engine)
    alias = {"type": "alias", "userId": "buyer", "previousId": "friend"}
    ingest(engine, key, [parse_message(alias, received_at=base)])
    resolve_pending(engine)
    assert set(tags(engine, brand, "buyer")) == {"product:serum", "source:ad", "entry_page:spring-sale"}
    assert batch.recompute_audience(engine, brand.workspace_id) == []
