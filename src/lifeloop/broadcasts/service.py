"""Broadcasts: drafts, the audience estimate, scheduling, cancelling (sending is ``sender``'s job).

draft → scheduled → sending → sent, or cancelled from any of the first three. A draft can be edited;
scheduling checks everything that would stop it later (an empty audience, a template that is missing
or for another channel, a channel without credentials, a time in the past) and refuses with a reason.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, select, update

from lifeloop.broadcasts.audience import audience_ids, chunks, variant_of
from lifeloop.broadcasts.definition import KEY, ChannelMessage, Definition, Variant, parse_definition
from lifeloop.broadcasts.models import broadcasts
from lifeloop.errors import Conflict, InvalidInput, NotFound
from lifeloop.messaging.policy import Audience
from lifeloop.store.schema import utcnow

# Scheduled a little in the past still counts as now: the request took time to arrive.
PAST_TOLERANCE = timedelta(minutes=1)
MAX_WINDOW = timedelta(days=14)


@dataclass(frozen=True, slots=True)
class Broadcast:
    id: int
    workspace_id: int
    key: str
    name: str
    status: str
    definition: dict[str, Any]
    send_at: datetime | None
    audience_size: int | None
    queued: int
    started_at: datetime | None
    finished_at: datetime | None
    note: str | None
    created_at: datetime
    updated_at: datetime

    def parsed(self) -> Definition:
        return parse_definition(self.definition)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("workspace_id")
        return out


def _record(row: Any) -> Broadcast:
    return Broadcast(**{c: getattr(row, c) for c in Broadcast.__dataclass_fields__})


def _check_key(key: str) -> str:
    if not isinstance(key, str) or not KEY.match(key):
        raise InvalidInput("a broadcast key is 1-64 lower-case letters, digits, _ or -", field="key")
    return key


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        raise InvalidInput("a broadcast name is 1-200 characters", field="name")
    return name.strip()


def _check_templates(conn: Connection, workspace_id: int, definition: Definition) -> None:
    from lifeloop.messaging.templates.service import get_template

    for variant in definition.all_variants():
        for message in variant.channels:
            try:
                template = get_template(conn, workspace_id, message.template)
            except NotFound:
                raise InvalidInput(
                    f"no template {message.template!r} in this workspace", field="definition.channels"
                ) from None
            if template.channel != message.channel:
                raise InvalidInput(
                    f"template {message.template!r} is for {template.channel}, not {message.channel}",
                    field="definition.channels",
                )


def create_broadcast(
    conn: Connection, workspace_id: int, *, key: str, name: str, definition: Any, now: datetime | None = None
) -> Broadcast:
    """A new draft; the definition is checked now (templates exist and fit their channels)."""
    now = now or utcnow()
    parsed = parse_definition(definition)
    _check_templates(conn, workspace_id, parsed)
    taken = conn.execute(
        select(broadcasts.c.id).where(broadcasts.c.workspace_id == workspace_id, broadcasts.c.key == key)
    ).first()
    if taken is not None:
        raise Conflict(f"a broadcast {key!r} already exists", field="key")
    row = conn.execute(
        broadcasts.insert()
        .values(
            workspace_id=workspace_id,
            key=_check_key(key),
            name=_check_name(name),
            status="draft",
            definition=parsed.model_dump(mode="json", exclude_none=True),
            queued=0,
            created_at=now,
            updated_at=now,
        )
        .returning(*broadcasts.c)
    ).one()
    return _record(row)


def get_broadcast(conn: Connection, workspace_id: int, key: str) -> Broadcast:
    row = conn.execute(
        select(broadcasts).where(broadcasts.c.workspace_id == workspace_id, broadcasts.c.key == key)
    ).first()
    if row is None:
        raise NotFound(f"no broadcast {key!r} in this workspace", field="key")
    return _record(row)


def list_broadcasts(conn: Connection, workspace_id: int, *, status: str | None = None) -> list[Broadcast]:
    from lifeloop.broadcasts.models import BROADCAST_STATUSES

    query = select(broadcasts).where(broadcasts.c.workspace_id == workspace_id)
    if status is not None:
        if status not in BROADCAST_STATUSES:
            raise InvalidInput(f"status must be one of {', '.join(BROADCAST_STATUSES)}", field="status")
        query = query.where(broadcasts.c.status == status)
    return [_record(r) for r in conn.execute(query.order_by(broadcasts.c.id.desc()))]


def update_broadcast(
    conn: Connection,
    workspace_id: int,
    key: str,
    *,
    name: str | None = None,
    definition: Any = None,
    now: datetime | None = None,
) -> Broadcast:
    """Change a draft (a scheduled broadcast is cancelled and copied instead, so nothing half-changes)."""
    now = now or utcnow()
    current = get_broadcast(conn, workspace_id, key)
    if current.status != "draft":
        raise Conflict(f"broadcast {key!r} is {current.status}; only a draft can be changed", field="key")
    values: dict[str, Any] = {"updated_at": now}
    if name is not None:
        values["name"] = _check_name(name)
    if definition is not None:
        parsed = parse_definition(definition)
        _check_templates(conn, workspace_id, parsed)
        values["definition"] = parsed.model_dump(mode="json", exclude_none=True)
    row = conn.execute(
        update(broadcasts)
        .where(broadcasts.c.workspace_id == workspace_id, broadcasts.c.id == current.id)
        .values(values)
        .returning(*broadcasts.c)
    ).one()
    return _record(row)


# --- when ------------------------------------------------------------------------------------------


def workspace_zone(conn: Connection, workspace_id: int) -> ZoneInfo:
    from lifeloop.messaging.policy import zone
    from lifeloop.workspaces.service import get_workspace

    return zone(get_workspace(conn, workspace_id).timezone)


def in_utc(moment: datetime, tz: ZoneInfo) -> datetime:
    return (moment.replace(tzinfo=tz) if moment.tzinfo is None else moment).astimezone(UTC)


def send_window(definition: Definition, tz: ZoneInfo, now: datetime) -> tuple[datetime, datetime | None]:
    """When the messages are queued, and (best hour) the end of the window they are spread over."""
    schedule = definition.schedule
    if schedule.mode == "now":
        return now, None
    start = in_utc(schedule.at, tz) if schedule.at is not None else now
    if start < now - PAST_TOLERANCE:
        shown = start.astimezone(tz).strftime("%Y-%m-%d %H:%M")
        raise InvalidInput(
            f"schedule.at {shown} ({tz.key}) is in the past: choose a later time, or send now",
            field="definition.schedule.at",
        )
    start = max(start, now)
    if schedule.mode == "at":
        return start, None
    assert schedule.until is not None
    until = in_utc(schedule.until, tz)
    if until <= start + timedelta(minutes=10):
        raise InvalidInput(
            "schedule.until must be at least 10 minutes after the window's start", field="definition.schedule"
        )
    if until - start > MAX_WINDOW:
        raise InvalidInput("a best-hour window is at most 14 days long", field="definition.schedule.until")
    return start, until


# --- whom, and on which channel --------------------------------------------------------------------


def address_of(
    message: ChannelMessage, audience: Audience | None, user_id: str | None, pid: int
) -> str | None:
    """The recipient on a channel when it is not read from the profile's identities (None: it is)."""
    if message.channel == "webhook":  # posted to the workspace's endpoint, naming the user
        return user_id or f"profile:{pid}"
    return None


def reachable(channel: str, audience: Audience) -> bool:
    if audience.consents.get(channel) == "unsubscribed":
        return False
    return channel == "webhook" or channel in audience.addresses


def channel_order(variant: Variant, audience: Audience | None) -> list[ChannelMessage]:
    """The variant's channels, from the first one the user can be reached on; all of them when none can
    (the first then records why it was not sent)."""
    if audience is None or len(variant.channels) == 1:
        return list(variant.channels)
    for index, message in enumerate(variant.channels):
        if reachable(message.channel, audience):
            return list(variant.channels[index:])
    return list(variant.channels)


def _configured_channels(conn: Connection, workspace_id: int) -> set[str]:
    from lifeloop.messaging.channels.config import list_configs

    return {c.channel for c in list_configs(conn, workspace_id) if c.enabled}


def estimate(
    conn: Connection,
    workspace_id: int,
    definition: Definition,
    *,
    broadcast_id: int = 0,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Who it would reach if sent at its time: members, holdout, reachable per channel, consent, and
    what the contact policy would do with each message (sent, suppressed or deferred, and why)."""
    from lifeloop.messaging.policy import decide, load_audiences
    from lifeloop.messaging.service import load_policy

    now = now or utcnow()
    tz = workspace_zone(conn, workspace_id)
    start, _until = send_window(definition, tz, now)
    ids = audience_ids(conn, workspace_id, definition.audience, now=now)
    policy = load_policy(conn, workspace_id)
    variants: Counter[str] = Counter()
    channels: Counter[str] = Counter()
    consent: dict[str, Counter[str]] = {}
    outcomes: Counter[str] = Counter()
    reasons: dict[str, Counter[str]] = {"suppress": Counter(), "defer": Counter(), "fallback": Counter()}
    for chunk in chunks(ids):
        audiences = load_audiences(
            conn, workspace_id, chunk, policy=policy, now=start, workspace_timezone=tz.key
        )
        for pid in chunk:
            variant = variant_of(definition, broadcast_id, pid)
            variants["holdout" if variant is None else variant.key] += 1
            audience = audiences.get(pid)
            if variant is None or audience is None:
                continue
            order = channel_order(variant, audience)
            first = order[0]
            for message in variant.channels:
                status = audience.consents.get(message.channel, "no record")
                consent.setdefault(message.channel, Counter())[status] += 1
            channels[first.channel if reachable(first.channel, audience) else "unreachable"] += 1
            verdict = decide(
                policy,
                channel=first.channel,
                recipient=address_of(first, audience, None, pid),
                transactional=False,
                optimize_send_time=False,
                audience=audience,
                now=start,
                jitter_key=f"broadcast:{broadcast_id}:p{pid}",
                fallback_channels=[m.channel for m in order[1:]],
            )
            outcomes[verdict.action] += 1
            if verdict.action in reasons and verdict.reason:
                reasons[verdict.action][verdict.reason] += 1
    configured = _configured_channels(conn, workspace_id)
    used = sorted({m.channel for v in definition.all_variants() for m in v.channels})
    return {
        "members": len(ids),
        "holdout": variants.pop("holdout", 0),
        "variants": dict(variants),
        "send_at": start,
        "reachable": dict(channels),
        "consent": {channel: dict(counts) for channel, counts in consent.items()},
        "expected": {
            "sent": outcomes["send"] + outcomes["fallback"],
            "on_fallback_channel": outcomes["fallback"],
            "suppressed": outcomes["suppress"],
            "deferred": outcomes["defer"],
            "reasons": {kind: dict(counts) for kind, counts in reasons.items() if counts},
        },
        "channels_without_credentials": [c for c in used if c not in configured],
    }


# --- scheduling and cancelling ---------------------------------------------------------------------


def schedule_broadcast(
    conn: Connection, workspace_id: int, key: str, *, now: datetime | None = None
) -> Broadcast:
    """draft → scheduled (at its time; "now" means the next worker tick), after every check."""
    now = now or utcnow()
    current = get_broadcast(conn, workspace_id, key)
    if current.status != "draft":
        raise Conflict(f"broadcast {key!r} is already {current.status}", field="key")
    definition = current.parsed()
    _check_templates(conn, workspace_id, definition)
    start, _until = send_window(definition, workspace_zone(conn, workspace_id), now)
    configured = _configured_channels(conn, workspace_id)
    for variant in definition.all_variants():
        for message in variant.channels:
            if message.channel not in configured:
                raise InvalidInput(
                    f"the {message.channel} channel has no credentials in this workspace: "
                    f"add them under channels before sending on it",
                    field="definition.channels",
                )
    if not audience_ids(conn, workspace_id, definition.audience, now=now):
        raise InvalidInput("the audience is empty: nobody matches it now", field="definition.audience")
    row = conn.execute(
        update(broadcasts)
        .where(
            broadcasts.c.workspace_id == workspace_id,
            broadcasts.c.id == current.id,
            broadcasts.c.status == "draft",
        )
        .values(status="scheduled", send_at=start, updated_at=now)
        .returning(*broadcasts.c)
    ).first()
    if row is None:
        raise Conflict(f"broadcast {key!r} changed while it was being scheduled; try again", field="key")
    return _record(row)


def cancel_broadcast(
    conn: Connection, workspace_id: int, key: str, *, now: datetime | None = None
) -> dict[str, Any]:
    """Stop it: nothing more is queued, and queued messages not yet being sent are suppressed with
    the reason "broadcast cancelled". Messages already handed to a provider have gone out."""
    from lifeloop.messaging.outbox import cancel_messages

    now = now or utcnow()
    current = get_broadcast(conn, workspace_id, key)
    if conn.dialect.name == "postgresql":  # wait for a worker's queueing transaction, if one holds it
        conn.execute(
            select(broadcasts.c.id)
            .where(broadcasts.c.workspace_id == workspace_id, broadcasts.c.id == current.id)
            .with_for_update()
        )
        current = get_broadcast(conn, workspace_id, key)  # as that worker left it (sent, perhaps)
    if current.status in ("sent", "cancelled"):
        raise Conflict(f"broadcast {key!r} is already {current.status}", field="key")
    conn.execute(
        update(broadcasts)
        .where(broadcasts.c.workspace_id == workspace_id, broadcasts.c.id == current.id)
        .values(status="cancelled", finished_at=now, updated_at=now, note="cancelled by an operator")
    )
    stopped = cancel_messages(
        conn, workspace_id, message_ids(workspace_id, current.id), "broadcast cancelled", now=now
    )
    return {**get_broadcast(conn, workspace_id, key).as_dict(), "messages_stopped": stopped}


def outbox_key(broadcast_id: int, profile_id: int) -> str:
    return f"broadcast:{broadcast_id}:p{profile_id}"


def origin_of(broadcast_id: int) -> str:
    """The outbox ``origin`` of a broadcast's messages."""
    return f"broadcast:{broadcast_id}"


def message_ids(workspace_id: int, broadcast_id: int) -> Any:
    """A SELECT of the outbox ids of a broadcast's messages, fallbacks to another channel included."""
    from lifeloop.messaging.models import outbox

    return select(outbox.c.id).where(
        outbox.c.workspace_id == workspace_id, outbox.c.origin == origin_of(broadcast_id)
    )
