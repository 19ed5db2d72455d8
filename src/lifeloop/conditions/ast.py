"""The syntax tree of a condition, its static types, and the printer (``to_text`` parses back equal)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal as Lit

Scalar = int | float | str | bool
Op = Lit["==", "!=", "<", "<=", ">", ">="]
COMPARE_OPS: tuple[str, ...] = ("==", "!=", "<", "<=", ">", ">=")
SEEN = ("first_seen", "last_seen", "first_interaction", "last_interaction")
SEEN_ALIASES = {"last_active": "last_interaction"}

_DURATION = re.compile(r"([1-9][0-9]{0,5})([hdw])")
_UNIT = {"h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}
MAX_DURATION = timedelta(days=36600)
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def parse_duration(text: str) -> timedelta | None:
    """``"14d"`` → 14 days; ``h`` hours, ``d`` days (24 h), ``w`` weeks. None when malformed."""
    match = _DURATION.fullmatch(text)
    if not match:
        return None
    duration = int(match.group(1)) * _UNIT[match.group(2)]
    return duration if duration <= MAX_DURATION else None


@dataclass(frozen=True, slots=True)
class Interaction:
    """The selector ``interaction``: every event the user caused (see profiles.computed)."""


INTERACTION = Interaction()
Selector = str | Interaction
# What each first/last time reads: the (first|last) edge of which events (None: every event).
SEEN_TIMES: dict[str, tuple[str, Selector | None]] = {
    "first_seen": ("first", None),
    "last_seen": ("last", None),
    "first_interaction": ("first", INTERACTION),
    "last_interaction": ("last", INTERACTION),
}
# ``a op b`` ⟺ ``b FLIPPED[op] a``
FLIPPED = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!="}


# --- values -------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Literal:
    value: Scalar


@dataclass(frozen=True, slots=True)
class TraitRef:
    path: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PropertyRef:
    """An event property; only inside ``where=``."""

    path: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Now:
    pass


@dataclass(frozen=True, slots=True)
class Seen:
    which: str  # one of SEEN


@dataclass(frozen=True, slots=True)
class EventTime:
    which: str  # "first" | "last"
    selector: Selector


@dataclass(frozen=True, slots=True)
class Count:
    selector: Selector
    within: str | None = None
    where: Condition | None = None


@dataclass(frozen=True, slots=True)
class Sum:
    selector: Selector
    property: str
    within: str | None = None
    where: Condition | None = None


@dataclass(frozen=True, slots=True)
class DaysSince:
    time: TimeValue


@dataclass(frozen=True, slots=True)
class ActiveDays:
    within: str | None = None


@dataclass(frozen=True, slots=True)
class ActiveWeeks:
    weeks: int


@dataclass(frozen=True, slots=True)
class Fact:
    """An engagement fact of the profile: ``points()``, ``tier()``, ``coupon_unused(…)``,
    ``checkin_streak()`` (``conditions.facts``; provided by ``lifeloop.engagement``)."""

    name: str
    template: str | None = None  # coupon_unused("day7"): of that coupon template only


# The facts and the kind of their value: a missing tier (no programme) reads as missing.
FACT_KINDS = {"points": "number", "tier": "string", "coupon_unused": "number", "checkin_streak": "number"}

TimeValue = Now | Seen | EventTime
NumberValue = Count | Sum | DaysSince | ActiveDays | ActiveWeeks
Value = Literal | TraitRef | PropertyRef | TimeValue | NumberValue | Fact


# --- conditions ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Compare:
    op: str
    left: Value
    right: Value


@dataclass(frozen=True, slots=True)
class In:
    value: Value
    options: tuple[Literal, ...]


@dataclass(frozen=True, slots=True)
class Contains:
    value: TraitRef | PropertyRef
    item: Literal


@dataclass(frozen=True, slots=True)
class Exists:
    ref: TraitRef | PropertyRef


@dataclass(frozen=True, slots=True)
class HasTag:
    tag: str


@dataclass(frozen=True, slots=True)
class InStage:
    model: str | None
    stage: str


@dataclass(frozen=True, slots=True)
class InSegment:
    key: str


@dataclass(frozen=True, slots=True)
class And:
    items: tuple[Condition, ...]


@dataclass(frozen=True, slots=True)
class Or:
    items: tuple[Condition, ...]


@dataclass(frozen=True, slots=True)
class Not:
    item: Condition


Condition = Compare | In | Contains | Exists | HasTag | InStage | InSegment | And | Or | Not | Literal


def walk(node: object) -> Iterator[object]:
    """Every node of a condition tree (frozen dataclasses with slots all the way down)."""
    yield node
    for name in getattr(node, "__slots__", ()):
        child = getattr(node, name, None)
        if isinstance(child, list | tuple):
            for item in child:
                yield from walk(item)
        elif child is not None and hasattr(child, "__slots__"):
            yield from walk(child)


def static_type(value: Value) -> str:
    """``number``, ``string``, ``bool``, ``time`` or ``dynamic`` (a trait/property: known at run time)."""
    if isinstance(value, Literal):
        if isinstance(value.value, bool):
            return "bool"
        return "string" if isinstance(value.value, str) else "number"
    if isinstance(value, TraitRef | PropertyRef):
        return "dynamic"
    if isinstance(value, Now | Seen | EventTime):
        return "time"
    if isinstance(value, Fact):
        return FACT_KINDS[value.name]
    return "number"


# --- printer ------------------------------------------------------------------------------------
KEYWORDS = frozenset(
    {"and", "or", "not", "in", "contains", "true", "false", "now", "trait", "property", "interaction"}
)


def _string(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _path(root: str, path: tuple[str, ...]) -> str:
    parts = [f".{p}" if IDENTIFIER.fullmatch(p) and p not in KEYWORDS else f"[{_string(p)}]" for p in path]
    return root + "".join(parts)


def _literal(value: Scalar) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return _string(value)
    return repr(value)


def _selector(selector: Selector) -> str:
    return "interaction" if isinstance(selector, Interaction) else _string(selector)


def _args(*positional: str, **keywords: str | None) -> str:
    parts = list(positional) + [f"{k}={v}" for k, v in keywords.items() if v is not None]
    return ", ".join(parts)


def _value(node: Value) -> str:
    match node:
        case Literal(value):
            return _literal(value)
        case TraitRef(path):
            return _path("trait", path)
        case PropertyRef(path):
            return _path("property", path)
        case Now():
            return "now"
        case Seen(which):
            return which
        case EventTime(which, selector):
            return f"{which}({_selector(selector)})"
        case Count(selector, within, where):
            within_text = None if within is None else _string(within)
            where_text = None if where is None else to_text(where)
            return f"count({_args(_selector(selector), within=within_text, where=where_text)})"
        case Sum(selector, prop, within, where):
            within_text = None if within is None else _string(within)
            where_text = None if where is None else to_text(where)
            args = _args(_selector(selector), _string(prop), within=within_text, where=where_text)
            return f"sum({args})"
        case DaysSince(time):
            return f"days_since({_value(time)})"
        case ActiveDays(within):
            return f"active_days({_args(within=None if within is None else _string(within))})"
        case ActiveWeeks(weeks):
            return f"active_weeks({weeks})"
        case Fact(name, template):
            return f"{name}({'' if template is None else _string(template)})"
    raise TypeError(f"not a value: {node!r}")


def _operand(node: Condition, parent: type) -> str:
    """A child of and/or/not, in parentheses where the parser would otherwise regroup it."""
    text = to_text(node)
    if isinstance(node, Or) or (isinstance(node, And) and parent is not Or):
        return f"({text})"
    return text


def to_text(node: Condition) -> str:
    """The canonical text of a condition; ``parse(to_text(c)) == c``."""
    match node:
        case And(items):
            return " and ".join(_operand(i, And) for i in items)
        case Or(items):
            return " or ".join(_operand(i, Or) for i in items)
        case Not(item):
            return f"not {_operand(item, Not)}"
        case Compare(op, left, right):
            return f"{_value(left)} {op} {_value(right)}"
        case In(value, options):
            return f"{_value(value)} in [{', '.join(_literal(o.value) for o in options)}]"
        case Contains(value, item):
            return f"{_value(value)} contains {_literal(item.value)}"
        case Exists(ref):
            return f"exists({_value(ref)})"
        case HasTag(tag):
            return f"has_tag({_string(tag)})"
        case InStage(model, stage):
            args = _string(stage) if model is None else f"{_string(model)}, {_string(stage)}"
            return f"in_stage({args})"
        case InSegment(key):
            return f"in_segment({_string(key)})"
        case Literal(value) if isinstance(value, bool):
            return _literal(value)
    raise TypeError(f"not a condition: {node!r}")
