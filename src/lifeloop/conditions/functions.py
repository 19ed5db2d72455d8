"""Function calls of the language: each one's arguments checked against what it takes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lifeloop.conditions.ast import (
    ActiveDays,
    ActiveWeeks,
    Condition,
    Count,
    DaysSince,
    EventTime,
    Exists,
    Fact,
    HasTag,
    InSegment,
    InStage,
    Interaction,
    Literal,
    Now,
    PropertyRef,
    Seen,
    Sum,
    TraitRef,
    Value,
    parse_duration,
)
from lifeloop.conditions.lexer import Token

if TYPE_CHECKING:
    from lifeloop.conditions.parser import _Parser

MAX_KEY = 255
FUNCTIONS = (
    "count",
    "sum",
    "first",
    "last",
    "days_since",
    "active_days",
    "active_weeks",
    "has_tag",
    "in_stage",
    "in_segment",
    "exists",
    "points",
    "tier",
    "coupon_unused",
    "checkin_streak",
)


@dataclass
class Call:
    """One function call's arguments, checked against what the function takes."""

    parser: _Parser
    name: str
    token: Token
    positional: list[tuple[Any, Token]]
    keywords: dict[str, tuple[Any, Token]]
    close: Token

    def shape(self, count: tuple[int, int], keywords: tuple[str, ...], usage: str) -> None:
        low, high = count
        if not low <= len(self.positional) <= high:
            at = self.positional[high][1] if len(self.positional) > high else self.close
            self.parser.fail(f"{self.name}() takes {usage}", at)
        for key, (_, token) in self.keywords.items():
            if key not in keywords:
                allowed = ", ".join(f"{k}=" for k in keywords) or "no keyword arguments"
                self.parser.fail(f"{self.name}() has no argument {key}=; it takes {allowed}", token)

    def string(self, index: int, what: str) -> str:
        value, token = self.positional[index]
        if not isinstance(value, Literal) or not isinstance(value.value, str):
            self.parser.fail(f"{self.name}() takes {what} as a quoted string", token)
        if not value.value or len(value.value) > MAX_KEY:
            self.parser.fail(f"{what} must be 1-{MAX_KEY} characters", token)
        return value.value

    def selector(self) -> str | Interaction:
        value, token = self.positional[0]
        if isinstance(value, Interaction):
            return value
        if not isinstance(value, Literal) or not isinstance(value.value, str):
            self.parser.fail(f'{self.name}() takes an event name ("Order Completed") or interaction', token)
        return self.string(0, "an event name")

    def within(self) -> str | None:
        if "within" not in self.keywords:
            return None
        value, token = self.keywords["within"]
        if (
            not isinstance(value, Literal)
            or not isinstance(value.value, str)
            or parse_duration(value.value) is None
        ):
            message = 'within= takes a duration such as "14d", "12h" or "4w" (at most 36600 days)'
            self.parser.fail(message, token)
        return value.value

    def where(self) -> Any:
        return self.keywords["where"][0] if "where" in self.keywords else None

    def build(self) -> Value | Condition:
        match self.name:
            case "count":
                self.shape((1, 1), ("within", "where"), 'an event name or interaction: count("Page Viewed")')
                return Count(self.selector(), self.within(), self.where())
            case "sum":
                usage = 'an event and a property: sum("Order Completed", "revenue")'
                self.shape((2, 2), ("within", "where"), usage)
                return Sum(self.selector(), self.string(1, "a property name"), self.within(), self.where())
            case "first" | "last":
                self.shape((1, 1), (), f'one event name or interaction: {self.name}("Channel Followed")')
                return EventTime(self.name, self.selector())
            case "days_since":
                self.shape((1, 1), (), "one time: days_since(last_interaction)")
                value, token = self.positional[0]
                if not isinstance(value, Now | Seen | EventTime):
                    self.parser.fail(
                        "days_since() takes a time: first_seen, last_seen, first_interaction, "
                        "last_interaction, first(…) or last(…)",
                        token,
                    )
                return DaysSince(value)
            case "active_days":
                self.shape((0, 0), ("within",), 'no positional arguments: active_days(within="30d")')
                return ActiveDays(self.within())
            case "active_weeks":
                self.shape((1, 1), (), "a number of weeks: active_weeks(4)")
                value, token = self.positional[0]
                if not (isinstance(value, Literal) and type(value.value) is int and 1 <= value.value <= 520):
                    self.parser.fail("active_weeks() takes a whole number of weeks from 1 to 520", token)
                return ActiveWeeks(value.value)
            case "has_tag":
                self.shape((1, 1), (), 'one tag: has_tag("vip")')
                return HasTag(self.string(0, "a tag"))
            case "in_segment":
                self.shape((1, 1), (), 'one segment key: in_segment("big_spenders")')
                return InSegment(self.string(0, "a segment key"))
            case "in_stage":
                self.shape((1, 2), (), 'a stage, or a model and a stage: in_stage("line", "loyal")')
                if len(self.positional) == 1:
                    return InStage(None, self.string(0, "a stage"))
                return InStage(self.string(0, "a lifecycle model"), self.string(1, "a stage"))
            case "exists":
                self.shape((1, 1), (), "one trait or property: exists(trait.phone)")
                value, token = self.positional[0]
                if not isinstance(value, TraitRef | PropertyRef):
                    self.parser.fail("exists() takes a trait or property, as in exists(trait.phone)", token)
                return Exists(value)
            case "points" | "tier" | "checkin_streak":
                self.shape((0, 0), (), f"no arguments: {self.name}()")
                return Fact(self.name)
            case "coupon_unused":
                usage = 'no argument, or one coupon template key: coupon_unused("day7")'
                self.shape((0, 1), (), usage)
                if not self.positional:
                    return Fact("coupon_unused")
                return Fact("coupon_unused", self.string(0, "a coupon template key"))
        raise AssertionError(self.name)
