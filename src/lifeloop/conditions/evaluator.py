"""The real-time back end: evaluate a condition for one profile, through a ``ProfileView``.

Semantics shared with the SQL compiler (docs/conditions.md):
- a trait or property that is absent or JSON null is *missing*; any comparison with a missing value,
  or between values of different kinds (number, string, boolean, time), is false — and ``not`` of it
  true;
- booleans are not numbers (``true == 1`` is false);
- ``within="14d"`` keeps events later than ``now − 14 × 24 h``;
- ``days_since(t)`` is the number of whole 24-hour periods from ``t`` to ``now``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Protocol

from lifeloop.conditions.ast import (
    ActiveDays,
    ActiveWeeks,
    And,
    Compare,
    Condition,
    Contains,
    Count,
    DaysSince,
    EventTime,
    Exists,
    Fact,
    HasTag,
    In,
    InSegment,
    InStage,
    Literal,
    Not,
    Now,
    Or,
    PropertyRef,
    Seen,
    Selector,
    Sum,
    TraitRef,
    Value,
    parse_duration,
)
from lifeloop.profiles.computed import DAY, EPOCH

EventFilter = Callable[[Mapping[str, Any] | None], bool]


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


class ProfileView(Protocol):
    """What a condition can know about one profile at one moment."""

    @property
    def now(self) -> datetime: ...

    def trait(self, path: tuple[str, ...]) -> Any:
        """The trait at ``path``, or MISSING."""

    def seen(self, which: str) -> datetime | None:
        """first_seen, last_seen, first_interaction or last_interaction."""

    def event_time(self, which: str, selector: Selector) -> datetime | None:
        """The first or last time of an event name (or of any interaction)."""

    def count(self, selector: Selector, since: datetime | None, where: EventFilter | None) -> int:
        """How many such events, later than ``since`` when given, passing ``where`` when given."""

    def total(
        self, selector: Selector, prop: str, since: datetime | None, where: EventFilter | None
    ) -> float:
        """The sum of the numeric top-level property ``prop`` over the same events."""

    def active_days(self, since: datetime | None) -> int:
        """Distinct UTC days with an interaction later than ``since``."""

    def active_weeks(self, weeks: int) -> int:
        """Distinct ISO weeks (UTC), among this one and the ``weeks − 1`` before it, with an interaction."""

    def has_tag(self, tag: str) -> bool: ...

    def in_stage(self, model: str | None, stage: str) -> bool: ...

    def in_segment(self, key: str) -> bool: ...

    def fact(self, fact: Fact) -> Any:
        """An engagement fact (``points()``, ``tier()``…; ``conditions.facts``), or MISSING."""


def kind_of(value: Any) -> str | None:
    """The language's kind of a runtime value; None for missing or structured values."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, datetime):
        return "time"
    return None


def compare(op: str, left: Any, right: Any) -> bool:
    kind = kind_of(left)
    if kind is None or kind != kind_of(right):
        return False
    match op:
        case "==":
            return bool(left == right)
        case "!=":
            return bool(left != right)
        case "<":
            return bool(left < right)
        case "<=":
            return bool(left <= right)
        case ">":
            return bool(left > right)
        case ">=":
            return bool(left >= right)
    raise ValueError(op)


def contains(container: Any, item: Any) -> bool:
    if isinstance(container, str):
        return isinstance(item, str) and item in container
    if isinstance(container, list):
        return any(compare("==", element, item) for element in container)
    return False


def lookup(document: Mapping[str, Any] | None, path: tuple[str, ...]) -> Any:
    value: Any = document
    for key in path:
        if not isinstance(value, Mapping) or key not in value:
            return MISSING
        value = value[key]
    return MISSING if value is None else value


def since(now: datetime, within: str | None) -> datetime | None:
    if within is None:
        return None
    duration = parse_duration(within)
    assert duration is not None, within  # the parser checked it
    return now - duration


def days_between(earlier: datetime, now: datetime) -> int:
    return (now - earlier) // DAY


def event_filter(where: Condition | None) -> EventFilter | None:
    """A Python predicate over one event's properties for a ``where=`` clause."""
    if where is None:
        return None
    condition = where

    def test(properties: Mapping[str, Any] | None) -> bool:
        return _condition(condition, None, properties)

    return test


def evaluate(condition: Condition, view: ProfileView, *, event: Mapping[str, Any] | None = None) -> bool:
    """Whether the profile behind ``view`` satisfies ``condition`` at ``view.now``.

    ``event`` holds the properties ``property.…`` reads outside ``where=`` (journeys' conditions).
    """
    return _condition(condition, view, event)


def _condition(node: Condition, view: ProfileView | None, props: Mapping[str, Any] | None) -> bool:
    match node:
        case And(items):
            return all(_condition(i, view, props) for i in items)
        case Or(items):
            return any(_condition(i, view, props) for i in items)
        case Not(item):
            return not _condition(item, view, props)
        case Literal(value):
            return bool(value)
        case Compare(op, left, right):
            return compare(op, _value(left, view, props), _value(right, view, props))
        case In(value, options):
            actual = _value(value, view, props)
            return any(compare("==", actual, o.value) for o in options)
        case Contains(value, item):
            return contains(_value(value, view, props), item.value)
        case Exists(ref):
            return _value(ref, view, props) is not MISSING
    assert view is not None, "a where= clause only tests properties"
    match node:
        case HasTag(tag):
            return view.has_tag(tag)
        case InStage(model, stage):
            return view.in_stage(model, stage)
        case InSegment(key):
            return view.in_segment(key)
    raise TypeError(f"not a condition: {node!r}")


def _value(node: Value, view: ProfileView | None, props: Mapping[str, Any] | None) -> Any:
    match node:
        case Literal(value):
            return value
        case PropertyRef(path):
            return lookup(props, path)
    assert view is not None, "a where= clause only tests properties"
    match node:
        case TraitRef(path):
            return view.trait(path)
        case Now():
            return view.now
        case Seen(which):
            return _or_missing(view.seen(which))
        case EventTime(which, selector):
            return _or_missing(view.event_time(which, selector))
        case Count(selector, within, where):
            return view.count(selector, since(view.now, within), event_filter(where))
        case Sum(selector, prop, within, where):
            return view.total(selector, prop, since(view.now, within), event_filter(where))
        case DaysSince(time):
            moment = _value(time, view, props)
            return MISSING if moment is MISSING else days_between(moment, view.now)
        case ActiveDays(within):
            return view.active_days(since(view.now, within))
        case ActiveWeeks(weeks):
            return view.active_weeks(weeks)
        case Fact():
            return view.fact(node)
    raise TypeError(f"not a value: {node!r}")


def _or_missing(value: datetime | None) -> Any:
    return MISSING if value is None else value


def iso_week(moment_day: int) -> int:
    """ISO week number since the epoch for a UTC day number (1970-01-01, day 0, was a Thursday)."""
    return (moment_day + 3) // 7


def next_iso_week(now: datetime) -> datetime:
    """The start (Monday 00:00 UTC) of the ISO week after the one holding ``now``."""
    days = (now - EPOCH) // DAY
    monday = days - (days + 3) % 7  # 1970-01-01 was a Thursday
    return EPOCH + (monday + 7) * DAY
