"""A workspace's tier programme as operators write it (JSON / YAML), checked into typed settings.

window_days: 365              # spend and points count over this rolling window
match: any                    # a tier is reached by any of its thresholds (all: every one)
points_per_unit: 1            # points per currency unit an order earns; multipliers add bonus on it
review: {every: month, day: 1}   # or {every: anniversary}: a year after reaching the tier
downgrade: one_step           # or to_qualifying
member_day: {day: 8, points_multiplier: 2}
tiers:                        # lowest first
  - {key: member, name: 一般會員}
  - {key: silver, name: 銀卡, min_spend: 3000, points_multiplier: 1.2,
     benefits: [生日禮], upgrade_coupons: [silver-welcome], member_day_coupons: [md-silver]}
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from lifeloop.errors import InvalidInput

KEY = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
TEMPLATE_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True, slots=True)
class Tier:
    key: str
    name: str
    rank: int  # 0 for the lowest
    min_spend: Decimal | None = None
    min_points: int | None = None
    benefits: tuple[str, ...] = ()
    points_multiplier: Decimal = Decimal(1)
    upgrade_coupons: tuple[str, ...] = ()
    member_day_coupons: tuple[str, ...] = ()

    @property
    def asks_nothing(self) -> bool:
        return self.min_spend is None and self.min_points is None

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "name": self.name,
            "rank": self.rank,
            "min_spend": None if self.min_spend is None else str(self.min_spend),
            "min_points": self.min_points,
            "benefits": list(self.benefits),
            "points_multiplier": str(self.points_multiplier),
            "upgrade_coupons": list(self.upgrade_coupons),
            "member_day_coupons": list(self.member_day_coupons),
        }


@dataclass(frozen=True, slots=True)
class MemberDay:
    day: int  # of the month, in the workspace's time zone
    points_multiplier: Decimal = Decimal(1)


@dataclass(frozen=True, slots=True)
class TierProgram:
    tiers: tuple[Tier, ...]
    window_days: int = 365
    match: str = "any"
    points_per_unit: Decimal | None = None  # None: the points programme's order rate
    review_every: str = "month"  # month | anniversary
    review_day: int = 1
    downgrade: str = "one_step"  # one_step | to_qualifying
    member_day: MemberDay | None = None
    source: dict[str, Any] = field(default_factory=dict, compare=False)

    def tier(self, key: str | None) -> Tier | None:
        return next((t for t in self.tiers if t.key == key), None)

    @property
    def lowest(self) -> Tier:
        return self.tiers[0]

    @property
    def uses_points(self) -> bool:
        return any(t.min_points is not None for t in self.tiers)

    def qualifying(self, spend: Decimal, points: int) -> Tier:
        """The highest tier whose thresholds the figures meet (the lowest tier when none)."""
        reached = self.tiers[0]
        for tier in self.tiers[1:]:
            checks = []
            if tier.min_spend is not None:
                checks.append(spend >= tier.min_spend)
            if tier.min_points is not None:
                checks.append(points >= tier.min_points)
            if checks and (any(checks) if self.match == "any" else all(checks)):
                reached = tier
        return reached

    def as_dict(self) -> dict[str, Any]:
        return {
            "window_days": self.window_days,
            "match": self.match,
            "points_per_unit": None if self.points_per_unit is None else str(self.points_per_unit),
            "review": {"every": self.review_every, "day": self.review_day},
            "downgrade": self.downgrade,
            "member_day": None
            if self.member_day is None
            else {"day": self.member_day.day, "points_multiplier": str(self.member_day.points_multiplier)},
            "tiers": [t.as_dict() for t in self.tiers],
        }


def _number(value: Any, field_name: str, *, minimum: Decimal = Decimal(0)) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InvalidInput(f"{field_name} must be a number", field=field_name)
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise InvalidInput(f"{field_name} must be a number, not {value!r}", field=field_name) from None
    if not number.is_finite() or number < minimum:
        raise InvalidInput(f"{field_name} must be a number of at least {minimum}", field=field_name)
    return number


def _int(value: Any, field_name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidInput(f"{field_name} must be a whole number from {low} to {high}", field=field_name)
    return value


def _templates(value: Any, field_name: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and TEMPLATE_KEY.match(v) for v in value):
        raise InvalidInput(f"{field_name} must be a list of coupon template keys", field=field_name)
    return tuple(value)


def _tier(raw: Any, rank: int) -> Tier:
    where = f"tiers[{rank}]"
    if not isinstance(raw, dict):
        raise InvalidInput(f"{where} must be a mapping with key and name", field=where)
    unknown = set(raw) - {
        "key",
        "name",
        "min_spend",
        "min_points",
        "benefits",
        "points_multiplier",
        "upgrade_coupons",
        "member_day_coupons",
    }
    if unknown:
        raise InvalidInput(f"{where} has unknown fields: {', '.join(sorted(unknown))}", field=where)
    key = raw.get("key")
    if not isinstance(key, str) or not KEY.match(key):
        raise InvalidInput(f"{where}.key must be lower-case letters, digits, _ or -", field=f"{where}.key")
    name = raw.get("name", key)
    if not isinstance(name, str) or not name.strip() or len(name) > 100:
        raise InvalidInput(f"{where}.name must be a text of 1 to 100 characters", field=f"{where}.name")
    benefits = raw.get("benefits") or []
    if not isinstance(benefits, list) or not all(isinstance(b, str) for b in benefits):
        raise InvalidInput(f"{where}.benefits must be a list of texts", field=f"{where}.benefits")
    min_spend = raw.get("min_spend")
    min_points = raw.get("min_points")
    multiplier = raw.get("points_multiplier", 1)
    return Tier(
        key=key,
        name=name.strip(),
        rank=rank,
        min_spend=None if min_spend is None else _number(min_spend, f"{where}.min_spend"),
        min_points=None if min_points is None else _int(min_points, f"{where}.min_points", 0, 10**12),
        benefits=tuple(benefits),
        points_multiplier=_number(multiplier, f"{where}.points_multiplier", minimum=Decimal(1)),
        upgrade_coupons=_templates(raw.get("upgrade_coupons"), f"{where}.upgrade_coupons"),
        member_day_coupons=_templates(raw.get("member_day_coupons"), f"{where}.member_day_coupons"),
    )


def parse_program(raw: Any) -> TierProgram:
    """Check an operator's programme; raises InvalidInput naming the first wrong field."""
    if not isinstance(raw, dict):
        raise InvalidInput("the tier programme must be a mapping with a tiers list", field="tiers")
    unknown = set(raw) - {
        "tiers",
        "window_days",
        "match",
        "points_per_unit",
        "review",
        "downgrade",
        "member_day",
    }
    if unknown:
        raise InvalidInput(f"unknown fields: {', '.join(sorted(unknown))}", field=sorted(unknown)[0])
    raw_tiers = raw.get("tiers")
    if not isinstance(raw_tiers, list) or not raw_tiers:
        raise InvalidInput("tiers must be a non-empty list, lowest first", field="tiers")
    tiers = tuple(_tier(t, i) for i, t in enumerate(raw_tiers))
    keys = [t.key for t in tiers]
    if len(set(keys)) != len(keys):
        raise InvalidInput("tier keys must be unique", field="tiers")
    if not tiers[0].asks_nothing:
        raise InvalidInput(
            "the first tier is where everyone starts: it takes no thresholds", field="tiers[0]"
        )
    for lower, higher in itertools.pairwise(tiers[1:]):
        for attr in ("min_spend", "min_points"):
            low, high = getattr(lower, attr), getattr(higher, attr)
            if low is not None and high is not None and high <= low:
                raise InvalidInput(
                    f"tier {higher.key} must ask more {attr} than {lower.key}", field=f"tiers[{higher.rank}]"
                )
    if any(t.asks_nothing for t in tiers[1:]):
        raise InvalidInput("every tier above the first needs min_spend or min_points", field="tiers")
    match = raw.get("match", "any")
    if match not in ("any", "all"):
        raise InvalidInput("match must be any or all", field="match")
    review = raw.get("review") or {}
    if not isinstance(review, dict):
        raise InvalidInput("review must be a mapping such as {every: month, day: 1}", field="review")
    every = review.get("every", "month")
    if every not in ("month", "anniversary"):
        raise InvalidInput("review.every must be month or anniversary", field="review.every")
    downgrade = raw.get("downgrade", "one_step")
    if downgrade not in ("one_step", "to_qualifying"):
        raise InvalidInput("downgrade must be one_step or to_qualifying", field="downgrade")
    member_day = None
    if raw.get("member_day") is not None:
        md = raw["member_day"]
        if not isinstance(md, dict):
            raise InvalidInput("member_day must be a mapping such as {day: 8}", field="member_day")
        member_day = MemberDay(
            day=_int(md.get("day"), "member_day.day", 1, 28),
            points_multiplier=_number(
                md.get("points_multiplier", 1), "member_day.points_multiplier", minimum=Decimal(1)
            ),
        )
    return TierProgram(
        tiers=tiers,
        window_days=_int(raw.get("window_days", 365), "window_days", 1, 3660),
        match=match,
        points_per_unit=None
        if raw.get("points_per_unit") is None
        else _number(raw["points_per_unit"], "points_per_unit"),
        review_every=every,
        review_day=_int(review.get("day", 1), "review.day", 1, 28),
        downgrade=downgrade,
        member_day=member_day,
        source=raw,
    )
