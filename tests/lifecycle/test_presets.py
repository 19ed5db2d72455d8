"""The four shipped presets replay their seed articles' situations (docs/presets.md): each lands right.

Each case is data: a history of (days ago, event, properties), traits and tags, and the stage the seed
says the customer is in. The same cases run against stored profiles in test_stage_assignment.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from lifeloop.conditions import MemoryProfile
from lifeloop.errors import InvalidInput
from lifeloop.lifecycle.definition import load_model, preset, preset_keys
from lifeloop.profiles.computed import ResolvedEvent

NOW = datetime(2026, 6, 30, 12, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Case:
    model: str
    situation: str
    history: tuple[tuple[float, str, dict[str, Any]], ...]  # (days ago, event name, properties)
    expected: str | None
    traits: dict[str, Any] = field(default_factory=dict)
    tags: tuple[str, ...] = ()


def h(*items: tuple[float, str] | tuple[float, str, dict[str, Any]]) -> tuple[tuple[float, str, dict], ...]:
    return tuple((item[0], item[1], item[2] if len(item) > 2 else {}) for item in items)  # type: ignore[misc]


FOLLOW = "Channel Followed"
BOOKING = {"category": "booking"}
KEYWORD = {"text": "想預約", "keyword": "預約"}

CASES = [
    # seed 000 — LINE
    Case("line", "added 7 days ago, no click since", h((7, FOLLOW)), "new"),
    Case(
        "line",
        "only browsed the menu twice",
        h((10, FOLLOW), (3, "Menu Clicked"), (2, "Menu Clicked")),
        "new",
    ),
    Case(
        "line",
        "3 menu clicks within 14 days",
        h((20, FOLLOW), (13, "Menu Clicked"), (6, "Menu Clicked"), (1, "Menu Clicked")),
        "engaged",
    ),
    Case(
        "line",
        "3 menu clicks, but the first one 15 days ago",
        h((20, FOLLOW), (15, "Menu Clicked"), (6, "Menu Clicked"), (1, "Menu Clicked")),
        "new",
    ),
    Case("line", "sent a keyword", h((9, FOLLOW), (2, "Message Received", KEYWORD)), "engaged"),
    Case("line", "answered a survey", h((9, FOLLOW), (4, "Survey Submitted")), "engaged"),
    Case(
        "line",
        "booking page twice in 7 days plus a keyword",
        h(
            (30, FOLLOW),
            (6, "Page Viewed", BOOKING),
            (1, "Page Viewed", BOOKING),
            (1, "Message Received", KEYWORD),
        ),
        "converting",
    ),
    Case(
        "line",
        "booking page twice in 7 days, no keyword",
        h((29, FOLLOW), (6, "Page Viewed", BOOKING), (1, "Page Viewed", BOOKING)),
        "new",
    ),
    Case("line", "wishlisted a product", h((12, FOLLOW), (3, "Product Added to Wishlist")), "converting"),
    Case("line", "first purchase", h((40, FOLLOW), (5, "Order Completed", {"revenue": 880})), "loyal"),
    Case("line", "30 days without interaction", h((60, FOLLOW), (30, "Menu Clicked")), "silent"),
    Case("line", "29 days without interaction", h((60, FOLLOW), (29.5, "Menu Clicked")), "new"),
    Case("line", "a buyer gone silent", h((90, FOLLOW), (45, "Order Completed", {"revenue": 380})), "silent"),
    Case("line", "blocked the account", h((10, FOLLOW), (2, "Channel Unfollowed")), "silent"),
    Case("line", "never a LINE friend", h((3, "Page Viewed")), None),
    # seed 001 — WeCom
    Case("wecom", "just added the advisor", h((2, FOLLOW)), "intro"),
    Case("wecom", "first order", h((20, FOLLOW), (3, "Order Completed", {"revenue": 1200})), "growing"),
    Case(
        "wecom",
        "second order",
        h((20, FOLLOW), (9, "Order Completed", {"revenue": 300}), (3, "Order Completed", {"revenue": 500})),
        "mature",
    ),
    Case("wecom", "brought a friend", h((20, FOLLOW), (3, "Referral Completed")), "mature"),
    Case("wecom", "VIP", h((20, FOLLOW), (3, "Message Received")), "mature", tags=("vip",)),
    Case("wecom", "30 days silent", h((80, FOLLOW), (31, "Order Completed", {"revenue": 99})), "dormant"),
    Case("wecom", "90 days silent", h((200, FOLLOW), (95, "Message Received")), "churned"),
    Case(
        "wecom",
        "deleted the advisor",
        h((30, FOLLOW), (5, "Order Completed"), (1, "Channel Unfollowed")),
        "churned",
    ),
    Case(
        "wecom", "re-added after deleting", h((30, FOLLOW), (5, "Channel Unfollowed"), (1, FOLLOW)), "intro"
    ),
    # seed 002 — AARRR
    Case("aarrr", "an anonymous visitor", h((1, "Page Viewed")), "awareness"),
    Case("aarrr", "signed up", h((2, "Page Viewed"), (1, "$identify")), "acquisition"),
    Case("aarrr", "followed the channel", h((2, FOLLOW)), "acquisition"),
    Case("aarrr", "put something in the cart", h((2, "$identify"), (1, "Product Added")), "activation"),
    Case(
        "aarrr",
        "completed the profile",
        h((2, "$identify")),
        "activation",
        traits={"phone": "+886912345678", "birthday": "1990-05-01"},
    ),
    Case("aarrr", "came back in another week", h((15, "Page Viewed"), (1, "Page Viewed")), "retention"),
    Case("aarrr", "came back, but 5 weeks later", h((40, "Page Viewed"), (1, "Page Viewed")), "awareness"),
    Case("aarrr", "bought", h((3, "$identify"), (1, "Order Completed", {"revenue": 10})), "referral_revenue"),
    # seed 004 — mall, by days since first seen
    Case("mall", "day 0", h((0.1, "Page Viewed")), "new"),
    Case("mall", "day 7", h((7.5, "Page Viewed")), "new"),
    Case("mall", "day 8", h((8, "Page Viewed")), "growing"),
    Case("mall", "day 30", h((30.5, "Page Viewed")), "growing"),
    Case("mall", "day 31", h((31, "Page Viewed")), "mature"),
    Case("mall", "day 90", h((90.5, "Page Viewed"), (1, "Order Completed")), "mature"),
    Case("mall", "day 120, active last week", h((120, "Page Viewed"), (6, "Page Viewed")), "mature"),
    Case(
        "mall", "day 120, silent for 30 days", h((120, "Page Viewed"), (30, "Order Completed")), "declining"
    ),
]


def profile_for(case: Case) -> MemoryProfile:
    events = [
        ResolvedEvent(
            profile_id=1,
            type="identify" if name == "$identify" else "page" if name == "Page Viewed" else "track",
            event=None if name in ("$identify", "Page Viewed") else name,
            timestamp=NOW - timedelta(days=days),
            properties=props,
        )
        for days, name, props in case.history
    ]
    return MemoryProfile(now=NOW, events=events, traits=case.traits, tags=dict.fromkeys(case.tags))


@pytest.mark.parametrize("case", CASES, ids=[f"{c.model}: {c.situation}" for c in CASES])
def test_preset_places_the_seed_situation(case: Case) -> None:
    stage = preset(case.model).stage_for(profile_for(case))
    assert (stage.key if stage else None) == case.expected


def test_every_preset_loads_with_names_in_both_languages() -> None:
    assert preset_keys() == ["aarrr", "line", "mall", "wecom"]
    for key in preset_keys():
        model = preset(key)
        assert model.key == key and model.version >= 1
        for stage in model.stages:
            assert stage.name("zh-CN") and stage.name("en")
    assert preset("mall").stage("declining").emit_on_enter == "Churn Risk Detected"
    assert preset("line").stage("silent").name("zh-CN") == "沉默&回收"


HEAD = "key: m\nname: {zh-CN: a, en: b}\nstages:\n"
STAGE = " - {key: s, name: {zh-CN: a, en: b}, when: 'true'}"


@pytest.mark.parametrize(
    ("text", "field", "words"),
    [
        ("key: x\nstages: [", None, "not valid YAML"),
        ("- a\n- b", None, "YAML mapping"),
        ("key: Bad Key\nname: {zh-CN: a, en: b}\nstages: []", "key", "lower-case"),
        ("key: m\nname: {zh-CN: a, en: b}\nstages: []", "stages", "non-empty"),
        (
            "key: m\nname: {en: b}\nstages:\n - {key: s, name: {zh-CN: a, en: b}, when: 'true'}",
            "name",
            "zh-CN",
        ),
        (
            HEAD + " - {key: s, name: {zh-CN: a, en: b}, when: 'count(\"x\") >='}",
            "stages[0].when",
            "stages[0].when (s)",
        ),
        (
            HEAD + f"{STAGE}\n{STAGE}",
            "stages[1].key",
            "used twice",
        ),
        ("key: m\nversion: 0\nname: {zh-CN: a, en: b}\nstages: []", "version", "positive"),
    ],
)
def test_a_broken_model_is_refused_with_the_field_at_fault(text: str, field: str | None, words: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        load_model(text)
    assert raised.value.field == field
    assert words in raised.value.message
