"""Comparing a treatment with a control group: the two-proportion test journeys, broadcasts and the
analytics metrics share, with a confidence interval and a verdict in plain words."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any


def sticky_fraction(*parts: Any) -> float:
    """A number in [0, 1) fixed by its parts: the same user always lands in the same group."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def sticky_pick(fraction: float, holdout: float, weights: Sequence[float]) -> int | None:
    """Which of the weighted groups a user's ``sticky_fraction`` falls in, or None for the holdout
    (``holdout`` percent of users, 0-100)."""
    roll = fraction * 100
    if roll < holdout:
        return None
    roll = (roll - holdout) / (100 - holdout) * sum(weights)
    for index, weight in enumerate(weights):
        roll -= weight
        if roll < 0:
            return index
    return len(weights) - 1


# Below this many users in either group a difference is not judged at all.
MIN_USERS = 30
Z_95 = 1.959963984540054


def two_proportion_p(x1: int, n1: int, x2: int, n2: int) -> float | None:
    """Two-sided p-value of the pooled two-proportion z-test, or None when undefined."""
    if n1 == 0 or n2 == 0:
        return None
    pooled = (x1 + x2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return None
    z = (x1 / n1 - x2 / n2) / se
    return math.erfc(abs(z) / math.sqrt(2))


@dataclass(frozen=True, slots=True)
class Comparison:
    """A group against the control: rates, the difference with its 95 % interval, p-value, verdict."""

    users: int
    converted: int
    rate: float | None
    control_users: int
    control_converted: int
    control_rate: float | None
    uplift: float | None  # rate − control rate, in proportion points
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    significant: bool
    verdict: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def compare(
    converted: int, users: int, control_converted: int, control_users: int, *, alpha: float = 0.05
) -> Comparison:
    """Compare a group's conversion with the control's (two-proportion z-test, Wald interval)."""
    rate = converted / users if users else None
    control_rate = control_converted / control_users if control_users else None
    if rate is None or control_rate is None:
        verdict = "no control group to compare with" if control_users == 0 else "no users in this group yet"
        return Comparison(users, converted, rate, control_users, control_converted, control_rate,
                          None, None, None, None, False, verdict)  # fmt: skip
    uplift = rate - control_rate
    se = math.sqrt(rate * (1 - rate) / users + control_rate * (1 - control_rate) / control_users)
    low, high = uplift - Z_95 * se, uplift + Z_95 * se
    p = two_proportion_p(converted, users, control_converted, control_users)
    significant = p is not None and p < alpha and min(users, control_users) >= MIN_USERS
    points = f"{uplift * 100:+.1f} points ({rate:.1%} vs {control_rate:.1%} in the control group"
    interval = f"95% interval {low * 100:+.1f} to {high * 100:+.1f}"
    if min(users, control_users) < MIN_USERS:
        verdict = f"too early to tell: fewer than {MIN_USERS} users in a group; {points})"
    elif significant:
        better = "converts better than" if uplift > 0 else "converts worse than"
        verdict = f"{better} the control group: {points}; {interval}; p = {p:.3g})"
    else:
        shown = "n/a" if p is None else f"{p:.3g}"
        verdict = f"no significant difference yet: {points}; {interval}; p = {shown})"
    return Comparison(users, converted, rate, control_users, control_converted, control_rate,
                      uplift, low, high, p, significant, verdict)  # fmt: skip


def versus_control(groups: dict[str, tuple[int, int, float]], control: str = "holdout") -> dict[str, Any]:
    """Each group's (users, converted, revenue) with its rates, and each against the control group:
    what a journey's A/B arms and a broadcast's variants show."""
    control_users, control_converted, _ = groups.get(control, (0, 0, 0.0))
    result: dict[str, Any] = {}
    for name, (users, converted, revenue) in groups.items():
        item: dict[str, Any] = {
            "users": users,
            "converted": converted,
            "rate": converted / users if users else None,
            "revenue": revenue,
            "revenue_per_user": revenue / users if users else None,
        }
        if name != control:
            item["vs_holdout"] = compare(converted, users, control_converted, control_users).as_dict()
        result[name] = item
    return {"arms": result, "control": control if control in groups else None}
