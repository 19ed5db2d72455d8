"""A workspace's points settings: earn rules, daily check-in, new-user tasks — defaults, checks, storage.

Each section is stored as given and read merged over its defaults, so an operator sets only what
differs. Saving a section checks all of it first: a bad value changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, select, update

from lifeloop.engagement.points.models import points_settings
from lifeloop.errors import InvalidInput

SECTIONS = ("rules", "checkin", "tasks")

DEFAULT_RULES: dict[str, Any] = {
    # per amount spent: floor(rate × the order's revenue, else total)
    "order": {"event": "Order Completed", "rate": 1},
    # a refund takes back what its order (same order_id) earned: all of it, or rate × a partial amount
    "refund": {"event": "Order Refunded"},
    "review": {"event": "Product Reviewed", "points": 10},
    "checkin": {"points": 5},  # each daily check-in
    "referral": {"points": 100},  # what the referrals part awards per referral
    # when earned points expire: never, N days after earning, or at the end of the calendar year
    "validity": {"kind": "days", "days": 365},
}
DEFAULT_CHECKIN: dict[str, Any] = {
    "enabled": True,
    "event": "Check In Requested",  # what a brand's app sends when the customer taps 签到
    "streak_rewards": {"3": 10, "7": 30},  # bonus on the Nth day of a streak; the cycle restarts after
    "makeup_cost": 20,  # points a make-up check-in (补签) costs
    "makeup_days": 3,  # how many days back a missed day may be made up
}
DEFAULT_TASKS: dict[str, Any] = {
    "window_days": 7,  # tasks count within this many days of the customer's first seen
    "profile_traits": ["name", "phone"],  # an identify with all of these completes the profile
    "rewards": {"complete_profile": 20, "browse": 5, "add_to_cart": 10, "follow": 20},
}
TASK_EVENTS = {  # the event that does each task (complete_profile: an identify, checked against traits)
    "complete_profile": "$identify",
    "browse": "Product Viewed",
    "add_to_cart": "Product Added",
    "follow": "Channel Followed",  # LINE follow, WeCom add contact (messaging.inbound)
}
DEFAULTS = {"rules": DEFAULT_RULES, "checkin": DEFAULT_CHECKIN, "tasks": DEFAULT_TASKS}
VALIDITY_KINDS = ("never", "days", "year_end")
OWN_EVENTS = frozenset({"Points Earned", "Points Spent", "Points Expired", "Checked In"})


@dataclass(frozen=True, slots=True)
class PointsSettings:
    rules: dict[str, Any]
    checkin: dict[str, Any]
    tasks: dict[str, Any]

    def section(self, name: str) -> dict[str, Any]:
        return {"rules": self.rules, "checkin": self.checkin, "tasks": self.tasks}[name]


def _merged(defaults: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """``given`` over ``defaults``, one level of nested mappings deep (a rule's own keys)."""
    out = dict(defaults)
    for key, value in given.items():
        if isinstance(value, dict) and isinstance(defaults.get(key), dict) and key != "streak_rewards":
            out[key] = {**defaults[key], **value}
        else:
            out[key] = value
    return out


def configured(conn: Connection, workspace_id: int) -> bool:
    """Whether the workspace has set up its points programme (saved any section of its settings)."""
    row = conn.execute(
        select(points_settings.c.workspace_id).where(points_settings.c.workspace_id == workspace_id)
    ).first()
    return row is not None


def get_settings(conn: Connection, workspace_id: int) -> PointsSettings:
    row = conn.execute(select(points_settings).where(points_settings.c.workspace_id == workspace_id)).first()
    stored = {s: (getattr(row, s) or {}) if row is not None else {} for s in SECTIONS}
    return PointsSettings(**{s: _merged(DEFAULTS[s], stored[s]) for s in SECTIONS})


def save_section(
    conn: Connection, workspace_id: int, section: str, values: Any, *, now: datetime
) -> dict[str, Any]:
    """Replace one section with ``values`` (what is left out takes its default); returns it merged."""
    if section not in SECTIONS:
        raise InvalidInput(f"section must be one of {', '.join(SECTIONS)}", field="section")
    if not isinstance(values, dict):
        raise InvalidInput(f"{section} must be a mapping", field=section)
    unknown = sorted(set(values) - set(DEFAULTS[section]))
    if unknown:
        raise InvalidInput(f"unknown {section} setting {unknown[0]!r}", field=f"{section}.{unknown[0]}")
    if section == "checkin" and isinstance(values.get("streak_rewards"), dict):  # JSON keys are text
        values = {**values, "streak_rewards": {str(k): v for k, v in values["streak_rewards"].items()}}
    merged = _merged(DEFAULTS[section], values)
    _CHECKS[section](merged)
    exists = conn.execute(
        select(points_settings.c.workspace_id).where(points_settings.c.workspace_id == workspace_id)
    ).first()
    if exists is None:
        empty: dict[str, Any] = {s: {} for s in SECTIONS}
        conn.execute(
            insert(points_settings).values(
                workspace_id=workspace_id, **{**empty, section: values}, updated_at=now
            )
        )
    else:
        conn.execute(
            update(points_settings)
            .where(points_settings.c.workspace_id == workspace_id)
            .values({section: values, "updated_at": now})
        )
    return merged


def _whole(value: Any, field: str, *, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidInput(f"{field} must be a whole number of at least {minimum}", field=field)
    return value


def _event_name(value: Any, field: str) -> None:
    if not isinstance(value, str) or not value.strip() or len(value) > 200:
        raise InvalidInput(f"{field} must be an event name", field=field)
    if value in OWN_EVENTS:  # earning on the events points record would feed on itself
        raise InvalidInput(f"{field} cannot be {value}, an event lifeloop records itself", field=field)


def _check_rules(rules: dict[str, Any]) -> None:
    for name in ("order", "refund", "review", "checkin", "referral", "validity"):
        if not isinstance(rules[name], dict):
            raise InvalidInput(f"rules.{name} must be a mapping", field=f"rules.{name}")
    _event_name(rules["order"].get("event"), "rules.order.event")
    rate = rules["order"].get("rate")
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate <= 1000:
        raise InvalidInput("rules.order.rate must be a number from 0 to 1000", field="rules.order.rate")
    _event_name(rules["refund"].get("event"), "rules.refund.event")
    _event_name(rules["review"].get("event"), "rules.review.event")
    for name in ("review", "checkin", "referral"):
        _whole(rules[name].get("points"), f"rules.{name}.points")
    validity = rules["validity"]
    if validity.get("kind") not in VALIDITY_KINDS:
        raise InvalidInput(
            f"rules.validity.kind must be one of {', '.join(VALIDITY_KINDS)}", field="rules.validity.kind"
        )
    if validity["kind"] == "days":
        _whole(validity.get("days"), "rules.validity.days", minimum=1)


def _check_checkin(checkin: dict[str, Any]) -> None:
    if not isinstance(checkin["enabled"], bool):
        raise InvalidInput("checkin.enabled must be true or false", field="checkin.enabled")
    _event_name(checkin["event"], "checkin.event")
    if checkin["event"] == "Checked In":
        raise InvalidInput(
            "checkin.event cannot be Checked In, the event lifeloop records", field="checkin.event"
        )
    rewards = checkin["streak_rewards"]
    if not isinstance(rewards, dict):
        raise InvalidInput(
            "checkin.streak_rewards must map a streak day to points", field="checkin.streak_rewards"
        )
    for day, points in rewards.items():
        if not str(day).isdigit() or not 1 <= int(day) <= 366:
            raise InvalidInput(
                f"checkin.streak_rewards day {day!r} must be a day from 1 to 366",
                field="checkin.streak_rewards",
            )
        _whole(points, f"checkin.streak_rewards.{day}")
    _whole(checkin["makeup_cost"], "checkin.makeup_cost")
    _whole(checkin["makeup_days"], "checkin.makeup_days")


def _check_tasks(tasks: dict[str, Any]) -> None:
    _whole(tasks["window_days"], "tasks.window_days", minimum=1)
    traits = tasks["profile_traits"]
    if not isinstance(traits, list) or not traits or not all(isinstance(t, str) and t for t in traits):
        raise InvalidInput("tasks.profile_traits must be a list of trait names", field="tasks.profile_traits")
    rewards = tasks["rewards"]
    if not isinstance(rewards, dict):
        raise InvalidInput("tasks.rewards must map a task to points", field="tasks.rewards")
    for task, points in rewards.items():
        if task not in TASK_EVENTS:
            raise InvalidInput(
                f"tasks.rewards has an unknown task {task!r}; tasks are {', '.join(TASK_EVENTS)}",
                field="tasks.rewards",
            )
        _whole(points, f"tasks.rewards.{task}")


_CHECKS: dict[str, Callable[[dict[str, Any]], None]] = {
    "rules": _check_rules,
    "checkin": _check_checkin,
    "tasks": _check_tasks,
}


def streak_cycle(checkin: dict[str, Any]) -> int:
    """The length of a streak's reward cycle: its longest rewarded day (0 when none is rewarded)."""
    return max((int(day) for day in checkin["streak_rewards"]), default=0)


def streak_bonus(checkin: dict[str, Any], streak: int) -> int:
    """The bonus for reaching day ``streak`` of a streak: the cycle restarts after its longest day."""
    cycle = streak_cycle(checkin)
    if cycle == 0 or streak < 1:
        return 0
    position = (streak - 1) % cycle + 1
    return int(checkin["streak_rewards"].get(str(position), 0))
