"""The language itself: what parses (and prints back), what does not and why, and the presets' rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from lifeloop.conditions import ConditionSyntaxError, MemoryProfile, evaluate, parse, to_text
from lifeloop.errors import InvalidInput
from lifeloop.profiles.computed import ResolvedEvent

# Every rule of the lifecycle presets (docs/presets.md), written in the language.
PRESET_RULES = [
    'days_since(last_interaction) >= 30 or last("Channel Unfollowed") > last("Channel Followed")',
    'count("Order Completed") >= 1',
    'count("Page Viewed", where=property.category == "booking", within="7d") >= 2 '
    'and count("Message Received", where=exists(property.keyword), within="7d") >= 1 '
    'or count("Product Added to Wishlist", within="7d") >= 1',
    'count("Menu Clicked", within="14d") >= 3 or count("Message Received", within="14d", '
    'where=exists(property.keyword)) >= 1 or count("Survey Submitted", within="14d") >= 1',
    'count("Channel Followed") >= 1',
    'last("Channel Unfollowed") > last("Channel Followed") or days_since(last_interaction) >= 90',
    'count("Order Completed") >= 2 or count("Referral Completed") >= 1 or has_tag("vip")',
    'sum("Order Completed", "revenue", within="365d") >= 2000 or count(interaction, within="30d") >= 20',
    "active_weeks(4) >= 2",
    'count("Product Added") >= 1 or count("Survey Submitted") >= 1 '
    "or exists(trait.phone) and exists(trait.birthday)",
    "days_since(first_seen) >= 91 and days_since(last_interaction) >= 30",
    "days_since(first_seen) >= 31 and days_since(first_seen) <= 90",
    "days_since(first_seen) >= 8 and days_since(first_seen) <= 30",
    "days_since(first_seen) <= 7",
    'in_stage("line", "loyal") and not in_segment("big_spenders")',
    'count("Page Viewed", within="14d") >= 3 and trait.city == "Taipei"',
    "days_since(last_active) >= 30",
    'sum("Order Completed", "revenue") > 1000',
    'trait["first name"] contains "Li" and trait.address.city in ["Taipei", "Tokyo"]',
    "trait.vip == true and trait.age >= 18 and trait.score != 2.5",
]


@pytest.mark.parametrize("text", PRESET_RULES)
def test_rules_parse_and_print_back(text: str) -> None:
    condition = parse(text)
    assert parse(to_text(condition)) == condition


ERRORS = [  # text, message fragment, line, column
    ('count("x" and', 'expected ",", found "and"', 1, 11),
    ('trait.city = "Taipei"', 'use "==" to test equality', 1, 12),
    ('count("x") > "3"', "cannot compare a number with a string", 1, 12),
    ("days_since(trait.signup) > 3", "days_since() takes a time", 1, 12),
    (
        "days_since(last_seen) > count(interaction)",
        "days_since(...) can only be compared with a number",
        1,
        23,
    ),
    ('frequency("x") > 1', "unknown function frequency()", 1, 1),
    ("", "expected a condition, found end of input", 1, 1),
    ("trait.a == trait.b", "not with another", 1, 9),
    ('count("x", within="2 weeks") > 1', "within= takes a duration", 1, 12),
    ('sum("Order Completed") > 1', "sum() takes an event and a property", 1, 22),
    ('has_tag("vip") == true', "a condition cannot be compared", 1, 1),
    ('(has_tag("vip")', 'expected ")", found end of input', 1, 16),
    ('count("x", where=trait.a == 1) > 1', "where= may only test event properties", 1, 12),
    ("property.x == 1", "property.… can only be used inside where=", 1, 1),
    ("trait.vip > true", "booleans can only be compared with == or !=", 1, 11),
    ('count("a") >= 1 and\n  trait.city >', "expected a value", 2, 15),
    ('trait.city == "Taipei', "unterminated string", 1, 15),
    ("trait.city == 'Taipei'", "unexpected character", 1, 15),
    ("last_seen > 3", "cannot compare a time with a number", 1, 11),
    ("trait.x > now", "cannot be compared with a time", 1, 9),
    ("active_weeks(0) > 1", "whole number of weeks", 1, 14),
    ('count("x", within="1d", within="2d") > 1', "within= given twice", 1, 25),
    ('count(within="1d") > 1', "count() takes an event name", 1, 18),
    ("count(interaction) > 1 or", "expected a value", 1, 26),
    ("true false", '"and", "or" or end of input', 1, 6),
]


@pytest.mark.parametrize(("text", "fragment", "line", "column"), ERRORS)
def test_errors_say_where_and_what(text: str, fragment: str, line: int, column: int) -> None:
    with pytest.raises(ConditionSyntaxError) as caught:
        parse(text)
    error = caught.value
    assert isinstance(error, InvalidInput) and error.status == 400 and error.field == "condition"
    assert fragment in error.message, error.message
    assert (error.line, error.column) == (line, column), error.message
    source_line = text.split("\n")[line - 1]
    assert error.message.endswith(f"\n  {source_line}\n  {' ' * (column - 1)}^")


NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)


def _at(days: float) -> datetime:
    return NOW - timedelta(days=days)


SEMANTICS = [  # condition, events as (type, name, days ago, properties), traits, expected
    (
        'count("Menu Clicked", within="14d") >= 3',
        [("track", "Menu Clicked", d, None) for d in (1, 5, 13.9)],
        {},
        True,
    ),
    (
        'count("Menu Clicked", within="14d") >= 3',
        [("track", "Menu Clicked", d, None) for d in (1, 5, 14)],
        {},
        False,
    ),
    ("days_since(last_interaction) >= 30", [("track", "Page", 30, None)], {}, True),
    ("days_since(last_interaction) >= 30", [("track", "Page", 29.99, None)], {}, False),
    (
        "days_since(last_interaction) >= 30",
        [("track", "Message Delivered", 1, None), ("page", None, 31, None)],
        {},
        True,
    ),
    ("days_since(last_interaction) >= 30", [], {}, False),
    ("not days_since(last_interaction) >= 30", [], {}, True),
    ('trait.city == "Taipei"', [], {"city": "Taipei"}, True),
    ('trait.city != "Taipei"', [], {}, False),
    ('not trait.city == "Taipei"', [], {}, True),
    ("trait.vip == 1", [], {"vip": True}, False),
    ("trait.age > 17", [], {"age": "18"}, False),
    ('trait.tags contains "vip"', [], {"tags": ["new", "vip"]}, True),
    ('trait.name contains "Li"', [], {"name": "Lin"}, True),
    ("exists(trait.phone)", [], {"phone": None}, False),
    (
        'sum("Order Completed", "revenue") > 1000',
        [("track", "Order Completed", 2, {"revenue": 600})] * 2,
        {},
        True,
    ),
    (
        'sum("Order Completed", "revenue") > 1000',
        [("track", "Order Completed", 2, {"revenue": "600"})] * 2,
        {},
        False,
    ),
    (
        'last("Channel Unfollowed") > last("Channel Followed")',
        [("track", "Channel Followed", 3, None), ("track", "Channel Unfollowed", 1, None)],
        {},
        True,
    ),
    ("active_weeks(4) >= 2", [("track", "A", 1, None), ("track", "A", 20, None)], {}, True),
    ("active_weeks(4) >= 2", [("track", "A", 1, None), ("track", "A", 40, None)], {}, False),
]


@pytest.mark.parametrize(("text", "history", "traits", "expected"), SEMANTICS)
def test_semantics(text: str, history: list, traits: dict, expected: bool) -> None:
    events = [ResolvedEvent(1, t, n, _at(d), p) for t, n, d, p in history]
    assert evaluate(parse(text), MemoryProfile(now=NOW, events=events, traits=traits)) is expected
