"""Contact policy (seed 004), checked at send time: consent, low-cost channels, frequency caps per value
tier, quiet hours in the user's time zone (defer, never drop), channel fallback and send-time optimisation.

``decide`` is a pure function of the policy, what is known about the recipient (``Audience``) and the
clock; ``load_audience`` reads that knowledge from the store.
Exact defaults: docs/presets.md, "Contact defaults".
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import Connection, and_, or_, select

from lifeloop.messaging.models import consents, outbox

# The channel identity (profiles.identities.kind) that addresses a profile on each channel.
CHANNEL_IDENTITY = {
    "line": "line_user_id",
    "wecom": "wecom_external_userid",
    "wechat": "wechat_openid",
    "email": "email",
    "sms": "phone",
}
CHANNELS = ("line", "wecom", "wechat", "email", "sms", "webhook")
# The value_tier names the seed uses in prose map onto the RFM layers of docs/presets.md.
TIER_ALIASES = {"normal": "regular", "vip": "high_value", "dormant": "sleeping", "churned": "lost"}
# lifeloop's own message events are not the user's interactions (docs/presets.md, Canonical events).
OWN_EVENTS = frozenset(
    {"Message Delivered", "Message Opened", "Message Clicked", "Message Failed", "Message Suppressed"}
)


class Cap(BaseModel):
    model_config = ConfigDict(extra="forbid")
    limit: int = Field(ge=0, description="At most this many non-transactional messages …")
    days: int = Field(ge=1, le=365, description="… in any rolling window of this many days.")


class Window(BaseModel):
    model_config = ConfigDict(extra="forbid")
    start: time
    end: time

    @model_validator(mode="after")
    def _ordered(self) -> Window:
        if self.end <= self.start:
            raise ValueError("a best window must end after it starts, on the same day")
        return self


class RateLimit(BaseModel):
    model_config = ConfigDict(extra="forbid")
    per_second: float = Field(gt=0, le=100_000)
    burst: int = Field(ge=1, le=100_000)


def _windows(*pairs: tuple[str, str]) -> list[Window]:
    return [Window(start=time.fromisoformat(a), end=time.fromisoformat(b)) for a, b in pairs]


class ContactPolicy(BaseModel):
    """A workspace's contact policy; every field has the seed-004 default."""

    model_config = ConfigDict(extra="forbid")

    caps: dict[str, Cap] = Field(
        default_factory=lambda: {
            "regular": Cap(limit=3, days=7),
            "high_value": Cap(limit=5, days=7),
            "sleeping": Cap(limit=2, days=30),
            "lost": Cap(limit=2, days=30),
        },
        description="Frequency cap per value tier; a tier without its own cap uses 'regular'.",
    )
    over_cap: Literal["suppress", "defer"] = Field(
        "suppress",
        description="What happens to a message over its cap: dropped with a reason, or sent later.",
    )
    quiet_hours_start: time = time(23, 0)
    quiet_hours_end: time = time(8, 0)
    quiet_hours_jitter_minutes: int = Field(
        10, ge=0, le=120, description="Deferred messages spread over this many minutes after the end."
    )
    fallback: dict[str, list[str]] = Field(
        default_factory=lambda: {"line": ["sms"], "wecom": ["sms"], "wechat": ["sms"]},
        description="Where to send instead when a channel is blocked, unsubscribed or has no address.",
    )
    low_cost_channels: dict[str, list[str]] = Field(
        default_factory=lambda: {"lost": ["sms", "wechat"]},
        description="Tiers that may only be contacted on these channels (transactional messages excepted).",
    )
    send_time_optimization: bool = Field(
        False, description="Send marketing messages at each user's most active hour (or the best windows)."
    )
    min_events_for_best_hour: int = Field(5, ge=1)
    best_windows_weekday: list[Window] = Field(
        default_factory=lambda: _windows(("12:00", "13:30"), ("19:00", "21:00"))
    )
    best_windows_weekend: list[Window] = Field(
        default_factory=lambda: _windows(("10:00", "11:00"), ("15:00", "17:00"), ("20:00", "22:00"))
    )
    rate_limits: dict[str, RateLimit] = Field(
        default_factory=lambda: {
            "line": RateLimit(per_second=1000, burst=1000),  # LINE push: 2,000 requests/s per channel
            "wecom": RateLimit(per_second=20, burst=20),
            "wechat": RateLimit(per_second=50, burst=50),
            "email": RateLimit(per_second=20, burst=50),
            "sms": RateLimit(per_second=20, burst=20),
            "webhook": RateLimit(per_second=200, burst=200),
        },
        description="Token bucket per workspace and channel, in each delivery worker.",
    )
    max_attempts: int = Field(8, ge=1, le=50)
    retry_base_seconds: float = Field(2.0, gt=0, le=3600)
    retry_max_seconds: float = Field(3600.0, gt=0, le=7 * 86400)

    @model_validator(mode="after")
    def _known_channels(self) -> ContactPolicy:
        named = set(self.fallback) | {c for cs in self.fallback.values() for c in cs}
        named |= {c for cs in self.low_cost_channels.values() for c in cs} | set(self.rate_limits)
        unknown = sorted(named - set(CHANNELS))
        if unknown:
            raise ValueError(f"unknown channel {unknown[0]!r}; channels are {', '.join(CHANNELS)}")
        if "regular" not in self.caps:
            raise ValueError("caps must include 'regular', the cap of every tier without its own")
        return self

    def cap_for(self, tier: str) -> Cap:
        return self.caps.get(tier) or self.caps["regular"]


def tier_of(traits: dict[str, Any] | None) -> str:
    """The value tier from ``traits.value_tier`` (RFM write-back), 'regular' when missing."""
    raw = (traits or {}).get("value_tier")
    if not isinstance(raw, str) or not raw.strip():
        return "regular"
    name = raw.strip().lower().replace(" ", "_").replace("-", "_")
    return TIER_ALIASES.get(name, name)


def zone(name: str | None, default: str = "UTC") -> ZoneInfo:
    for candidate in (name, default, "UTC"):
        if candidate:
            try:
                return ZoneInfo(candidate)
            except (ZoneInfoNotFoundError, ValueError):
                continue
    return ZoneInfo("UTC")


@dataclass(slots=True)
class Audience:
    """What the policy knows about the recipient of one message."""

    tier: str = "regular"
    timezone: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))
    consents: dict[str, str] = field(default_factory=dict)  # channel → subscribed | unsubscribed
    addresses: dict[str, str] = field(default_factory=dict)  # channel → recipient from identities
    recent_sends: list[datetime] = field(default_factory=list)  # non-transactional, counted by caps
    active_hour: int | None = None  # local hour with most interactions, when there are enough
    profile_id: int | None = None  # the surviving profile, after merges
    identities: list[dict[str, Any]] = field(default_factory=list)  # its identities (kind, value)


@dataclass(frozen=True, slots=True)
class Decision:
    action: Literal["send", "defer", "suppress", "fallback"]
    reason: str | None = None
    until: datetime | None = None  # defer
    channel: str | None = None  # fallback
    recipient: str | None = None  # fallback
    optimized: bool = False  # the deferral already picked the best time; do not optimise again


def at_local(day: date, clock: time, tz: ZoneInfo) -> datetime:
    """``clock`` on ``day`` in ``tz`` as UTC (zoneinfo applies that day's offset, so DST is handled)."""
    return datetime.combine(day, clock, tzinfo=tz).astimezone(UTC)


def in_quiet_hours(policy: ContactPolicy, local: datetime) -> bool:
    start, end, now = policy.quiet_hours_start, policy.quiet_hours_end, local.time()
    if start == end:
        return False
    return (now >= start or now < end) if start > end else (start <= now < end)


def quiet_hours_end_after(policy: ContactPolicy, now: datetime, tz: ZoneInfo) -> datetime:
    """The end of the quiet period ``now`` falls in."""
    local = now.astimezone(tz)
    day = local.date()
    if policy.quiet_hours_start > policy.quiet_hours_end and local.time() >= policy.quiet_hours_start:
        day += timedelta(days=1)
    return at_local(day, policy.quiet_hours_end, tz)


def stable_jitter(key: str, minutes: int) -> timedelta:
    """Spread deferred messages over ``minutes``, the same way for the same message on every worker."""
    if minutes <= 0:
        return timedelta(0)
    digest = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")
    return timedelta(seconds=digest % (minutes * 60))


def most_active_hour(timestamps: Iterable[datetime], tz: ZoneInfo, min_events: int) -> int | None:
    """The local hour of day with most interactions (earliest on a tie), if there are ``min_events``."""
    hours = Counter(ts.astimezone(tz).hour for ts in timestamps)
    if sum(hours.values()) < min_events:
        return None
    return min(hours, key=lambda h: (-hours[h], h))


def next_best_time(policy: ContactPolicy, now: datetime, audience: Audience) -> datetime:
    """Now if it is inside the user's best hour (or a seed window), else the start of the next one."""
    tz = audience.timezone
    hour = audience.active_hour
    personal = None
    if hour is not None and not in_quiet_hours(policy, datetime(2000, 1, 1, hour, 0, tzinfo=tz)):
        until = time(hour + 1, 0) if hour < 23 else time(23, 59, 59)
        personal = [Window(start=time(hour, 0), end=until)]
    today = now.astimezone(tz).date()
    for offset in range(8):
        day = today + timedelta(days=offset)
        windows = personal or (
            policy.best_windows_weekend if day.weekday() >= 5 else policy.best_windows_weekday
        )
        for window in sorted(windows, key=lambda w: w.start):
            start, end = at_local(day, window.start, tz), at_local(day, window.end, tz)
            if end > now:
                return max(start, now)
    return now  # no windows configured


def _reachable(channel: str, audience: Audience, recipient: str | None) -> str | None:
    if audience.consents.get(channel) == "unsubscribed":
        return None
    return recipient or audience.addresses.get(channel)


def decide(
    policy: ContactPolicy,
    *,
    channel: str,
    recipient: str | None,
    transactional: bool,
    optimize_send_time: bool,
    audience: Audience,
    now: datetime,
    jitter_key: str,
    fallback_channels: Iterable[str] | None = None,
) -> Decision:
    """Send, defer (until when), suppress (why), or fall back to another channel — for one message now.

    ``fallback_channels`` limits fallbacks to channels the message has content for (None: any).
    """
    allowed = None if fallback_channels is None else set(fallback_channels)
    recipient = _reachable(channel, audience, recipient)
    low_cost = None if transactional else policy.low_cost_channels.get(audience.tier)
    problem = None
    if audience.consents.get(channel) == "unsubscribed":
        problem, options = f"consent withdrawn on {channel}", policy.fallback.get(channel, [])
    elif recipient is None:
        problem, options = f"no {channel} address for this profile", policy.fallback.get(channel, [])
    elif low_cost is not None and channel not in low_cost:
        problem, options = (
            f"{audience.tier} profiles get only low-cost channels ({', '.join(low_cost)})",
            low_cost,
        )
    if problem is not None:
        for other in options:
            if other == channel or (allowed is not None and other not in allowed):
                continue
            if low_cost is not None and other not in low_cost:
                continue
            address = _reachable(other, audience, None)
            if address:
                return Decision(
                    "fallback", reason=f"{problem}; sent on {other} instead", channel=other, recipient=address
                )
        return Decision("suppress", reason=problem)

    if not transactional:
        cap = policy.cap_for(audience.tier)
        window_start = now - timedelta(days=cap.days)
        sent = sorted(t for t in audience.recent_sends if t > window_start)
        if len(sent) >= cap.limit:
            reason = f"frequency cap for {audience.tier}: {cap.limit} messages per {cap.days} days reached"
            if policy.over_cap == "defer" and cap.limit > 0:
                # When enough of the counted sends have left the window, one more fits.
                until = sent[len(sent) - cap.limit] + timedelta(days=cap.days)
                return Decision("defer", reason=reason, until=until)
            return Decision("suppress", reason=reason)

        tz = audience.timezone
        if in_quiet_hours(policy, now.astimezone(tz)):
            until = quiet_hours_end_after(policy, now, tz)
            if optimize_send_time:
                return Decision(
                    "defer",
                    reason=_quiet_reason(policy, tz),
                    optimized=True,
                    until=next_best_time(policy, until, audience),
                )
            until += stable_jitter(jitter_key, policy.quiet_hours_jitter_minutes)
            return Decision("defer", reason=_quiet_reason(policy, tz), until=until)

        if optimize_send_time:
            best = next_best_time(policy, now, audience)
            if best - now > timedelta(minutes=1):
                which = (
                    f"most active hour {audience.active_hour:02d}:00"
                    if audience.active_hour is not None
                    else "best window"
                )
                return Decision(
                    "defer", reason=f"send-time optimisation: {which}", until=best, optimized=True
                )
    return Decision("send")


def _quiet_reason(policy: ContactPolicy, tz: ZoneInfo) -> str:
    start, end = policy.quiet_hours_start.strftime("%H:%M"), policy.quiet_hours_end.strftime("%H:%M")
    return f"quiet hours {start}-{end} in {tz.key}"


def _interaction(type_: str, event: str | None) -> bool:
    """The user's own doing: lifeloop's message events and identify/alias calls are not."""
    from lifeloop.profiles.computed import event_name, is_interaction_name

    return is_interaction_name(event_name(type_, event)) and (event or "") not in OWN_EVENTS


# --- reading what the policy needs -------------------------------------------------------------------


def consents_of(conn: Connection, workspace_id: int, profile_id: int) -> dict[str, str]:
    rows = conn.execute(
        select(consents.c.channel, consents.c.status).where(
            consents.c.workspace_id == workspace_id, consents.c.profile_id == profile_id
        )
    )
    return {r.channel: r.status for r in rows}


def load_audience(
    conn: Connection,
    workspace_id: int,
    profile_id: int | None,
    *,
    policy: ContactPolicy,
    now: datetime,
    outbox_id: int | None = None,
    workspace_timezone: str = "UTC",
    with_active_hour: bool = False,
) -> tuple[Audience, int | None]:
    """The recipient of one message as the policy sees it, and the surviving profile id (after merges)."""
    longest = max(cap.days for cap in policy.caps.values())
    known = _read_known(
        conn,
        workspace_id,
        [] if profile_id is None else [profile_id],
        since=now - timedelta(days=longest),
        workspace_timezone=workspace_timezone,
    )
    k = known.get(profile_id) if profile_id is not None else None
    audience = _audience(k, outbox_id) if k is not None else Audience(timezone=zone(None, workspace_timezone))
    if with_active_hour:
        audience.active_hour = best_hour(conn, workspace_id, audience, policy, now)
    return audience, audience.profile_id


@dataclass(slots=True)
class _Known:
    """One surviving profile as the policy reads it, before the per-message recent sends."""

    profile_id: int
    tier: str
    timezone: ZoneInfo
    identities: list[dict[str, Any]]
    addresses: dict[str, str]
    consents: dict[str, str] = field(default_factory=dict)
    sends: list[tuple[int, str, datetime]] = field(default_factory=list)  # (outbox id, status, when)


def _read_known(
    conn: Connection,
    workspace_id: int,
    profile_ids: Iterable[int],
    *,
    since: datetime,
    workspace_timezone: str,
) -> dict[int, _Known]:
    """Profiles (after merges), identities, consents and cap-counted sends of many profiles: 5 queries."""
    from lifeloop.profiles.models import identities, profiles

    asked = sorted(set(profile_ids))
    if not asked:
        return {}
    survivor = {
        r.id: r.merged_into or r.id
        for r in conn.execute(
            select(profiles.c.id, profiles.c.merged_into).where(
                profiles.c.workspace_id == workspace_id, profiles.c.id.in_(asked)
            )
        )
    }
    alive = sorted(set(survivor.values()))
    known: dict[int, _Known] = {}
    for p in conn.execute(
        select(profiles.c.id, profiles.c.traits, profiles.c.timezone).where(
            profiles.c.workspace_id == workspace_id, profiles.c.id.in_(alive)
        )
    ):
        known[p.id] = _Known(p.id, tier_of(p.traits), zone(p.timezone, workspace_timezone), [], {})
    for i in conn.execute(
        select(identities.c.profile_id, identities.c.kind, identities.c.value, identities.c.created_at)
        .where(identities.c.workspace_id == workspace_id, identities.c.profile_id.in_(alive))
        .order_by(identities.c.profile_id, identities.c.created_at, identities.c.kind)
    ):
        if i.profile_id in known:
            known[i.profile_id].identities.append(
                {"kind": i.kind, "value": i.value, "created_at": i.created_at}
            )
    for k in known.values():
        for identity in k.identities:
            for channel, kind in CHANNEL_IDENTITY.items():
                if identity["kind"] == kind:
                    k.addresses.setdefault(channel, identity["value"])
    for c in conn.execute(
        select(consents.c.profile_id, consents.c.channel, consents.c.status).where(
            consents.c.workspace_id == workspace_id, consents.c.profile_id.in_(alive)
        )
    ):
        if c.profile_id in known:
            known[c.profile_id].consents[c.channel] = c.status
    for o in conn.execute(
        select(
            outbox.c.profile_id, outbox.c.id, outbox.c.status, outbox.c.delivered_at, outbox.c.updated_at
        ).where(
            outbox.c.workspace_id == workspace_id,
            outbox.c.profile_id.in_(alive),
            outbox.c.transactional.is_(False),
            or_(
                and_(outbox.c.status == "delivered", outbox.c.delivered_at > since),
                outbox.c.status == "sending",
            ),
        )
    ):
        if o.profile_id in known:
            when = o.delivered_at if o.status == "delivered" else o.updated_at
            known[o.profile_id].sends.append((o.id, o.status, when))
    return {asked_id: known[s] for asked_id, s in survivor.items() if s in known}


def _audience(k: _Known, before_id: int | None) -> Audience:
    # Messages being sent right now count when they were queued before this one.
    sends = [
        when
        for outbox_id, status, when in k.sends
        if status == "delivered" or before_id is None or outbox_id < before_id
    ]
    return Audience(
        tier=k.tier,
        timezone=k.timezone,
        consents=dict(k.consents),
        addresses=dict(k.addresses),
        recent_sends=sends,
        profile_id=k.profile_id,
        identities=k.identities,
    )


def load_audiences(
    conn: Connection,
    workspace_id: int,
    profile_ids: Iterable[int],
    *,
    policy: ContactPolicy,
    now: datetime,
    workspace_timezone: str = "UTC",
) -> dict[int, Audience]:
    """``load_audience`` for many profiles in a few queries, keyed by the ids asked for (unknown ones
    are absent). Messages being sent count against the caps, as for a message not queued yet."""
    longest = max(cap.days for cap in policy.caps.values())
    known = _read_known(
        conn,
        workspace_id,
        profile_ids,
        since=now - timedelta(days=longest),
        workspace_timezone=workspace_timezone,
    )
    return {pid: _audience(k, None) for pid, k in known.items()}


def load_message_audiences(
    conn: Connection,
    workspace_id: int,
    messages: Iterable[tuple[int, int | None]],
    *,
    policy: ContactPolicy,
    now: datetime,
    workspace_timezone: str = "UTC",
) -> dict[int, Audience]:
    """The audience of each (outbox id, profile id) message, keyed by outbox id, as ``load_audience``
    with ``outbox_id`` would read it one by one (a message without a profile gets the workspace's zone)."""
    pairs = list(messages)
    longest = max(cap.days for cap in policy.caps.values())
    known = _read_known(
        conn,
        workspace_id,
        (pid for _, pid in pairs if pid is not None),
        since=now - timedelta(days=longest),
        workspace_timezone=workspace_timezone,
    )
    default = zone(None, workspace_timezone)
    audiences: dict[int, Audience] = {}
    for outbox_id, pid in pairs:
        k = known.get(pid) if pid is not None else None
        audiences[outbox_id] = _audience(k, outbox_id) if k is not None else Audience(timezone=default)
    return audiences


def best_hour(
    conn: Connection, workspace_id: int, audience: Audience, policy: ContactPolicy, now: datetime
) -> int | None:
    """The profile's most active local hour over the last 90 days (send-time optimisation)."""
    from lifeloop.events import store as event_store

    if audience.profile_id is None:
        return None
    events = event_store.timeline(conn, workspace_id, audience.profile_id, limit=500)
    since = now - timedelta(days=90)
    stamps = [
        e["timestamp"] for e in events if e["timestamp"] > since and _interaction(e["type"], e["event"])
    ]
    return most_active_hour(stamps, audience.timezone, policy.min_events_for_best_hour)


def set_active_hours(
    conn: Connection, workspace_id: int, audiences: dict[int, Audience], policy: ContactPolicy, now: datetime
) -> None:
    """``best_hour`` for many audiences (keyed by profile id) in one read of their last 90 days."""
    from lifeloop.events.models import events

    by_profile = {a.profile_id: a for a in audiences.values() if a.profile_id is not None}
    if not by_profile:
        return
    stamps: dict[int, list[datetime]] = {pid: [] for pid in by_profile}
    rows = conn.execute(
        select(events.c.profile_id, events.c.type, events.c.event, events.c.timestamp).where(
            events.c.workspace_id == workspace_id,
            events.c.profile_id.in_(sorted(by_profile)),
            events.c.timestamp > now - timedelta(days=90),
        )
    )
    for pid, type_, name, at in rows:
        if _interaction(type_, name):
            stamps[pid].append(at)
    for pid, audience in by_profile.items():
        audience.active_hour = most_active_hour(
            stamps[pid], audience.timezone, policy.min_events_for_best_hour
        )
