"""A workspace's referral programme (老带新) as operators write it, checked into typed settings.

landing_url: https://shop.example.com/welcome   # /r/{code} redirects here with ?ref={code}
public_url: https://crm.example.com              # optional: else LIFELOOP_PUBLIC_URL
referrer_reward: {points: 200, coupon: friend-thanks}     # on the referee's first purchase
referee_reward: {points: 100, coupon: new-friend, on: join}   # on: join | first_purchase
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from lifeloop.errors import InvalidInput

TEMPLATE_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True, slots=True)
class Reward:
    points: int | None = None  # None: the referrer gets the points programme's referral rule; a referee 0
    coupon: str | None = None
    on: str = "first_purchase"  # join | first_purchase

    def as_dict(self) -> dict[str, Any]:
        return {"points": self.points, "coupon": self.coupon, "on": self.on}


@dataclass(frozen=True, slots=True)
class ReferralProgram:
    landing_url: str
    public_url: str | None = None
    referrer_reward: Reward = Reward()
    referee_reward: Reward = Reward()
    source: dict[str, Any] = field(default_factory=dict, compare=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "landing_url": self.landing_url,
            "public_url": self.public_url,
            "referrer_reward": self.referrer_reward.as_dict(),
            "referee_reward": self.referee_reward.as_dict(),
        }


def _url(value: Any, field_name: str) -> str:
    parts = urlsplit(value) if isinstance(value, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc or len(value) > 500:
        raise InvalidInput(f"{field_name} must be an http(s) URL", field=field_name)
    return str(value).rstrip("/") if field_name == "public_url" else str(value)


def _reward(raw: Any, field_name: str, *, may_join: bool) -> Reward:
    if raw is None:
        return Reward()
    if not isinstance(raw, dict) or set(raw) - {"points", "coupon", "on"}:
        raise InvalidInput(f"{field_name} must be a mapping of points, coupon and on", field=field_name)
    points = raw.get("points")
    if points is not None and (
        isinstance(points, bool) or not isinstance(points, int) or not 0 <= points <= 10**9
    ):
        raise InvalidInput(
            f"{field_name}.points must be a whole number of at least 0", field=f"{field_name}.points"
        )
    coupon = raw.get("coupon")
    if coupon is not None and (not isinstance(coupon, str) or not TEMPLATE_KEY.match(coupon)):
        raise InvalidInput(f"{field_name}.coupon must be a coupon template key", field=f"{field_name}.coupon")
    on = raw.get("on", "first_purchase")
    if on not in (("join", "first_purchase") if may_join else ("first_purchase",)):
        allowed = "join or first_purchase" if may_join else "first_purchase"
        raise InvalidInput(f"{field_name}.on must be {allowed}", field=f"{field_name}.on")
    return Reward(points=points, coupon=coupon, on=on)


def parse_program(raw: Any) -> ReferralProgram:
    """Check an operator's programme; raises InvalidInput naming the first wrong field."""
    if not isinstance(raw, dict):
        raise InvalidInput("the referral programme must be a mapping with a landing_url", field="landing_url")
    unknown = set(raw) - {"landing_url", "public_url", "referrer_reward", "referee_reward"}
    if unknown:
        raise InvalidInput(f"unknown fields: {', '.join(sorted(unknown))}", field=sorted(unknown)[0])
    return ReferralProgram(
        landing_url=_url(raw.get("landing_url"), "landing_url"),
        public_url=None if raw.get("public_url") is None else _url(raw["public_url"], "public_url"),
        referrer_reward=_reward(raw.get("referrer_reward"), "referrer_reward", may_join=False),
        referee_reward=_reward(raw.get("referee_reward"), "referee_reward", may_join=True),
        source=raw,
    )
