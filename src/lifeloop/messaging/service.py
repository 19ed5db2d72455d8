"""Messaging's function API: contact policies, consent, queueing messages, reading deliveries, and the
events deliveries send back into the event log."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Connection, Engine, select

from lifeloop.errors import InvalidInput, NotFound
from lifeloop.messaging.models import (
    CONSENT_STATUSES,
    OUTBOX_STATUSES,
    OutboxEntry,
    consents,
    contact_policies,
    delivery_attempts,
    outbox,
)
from lifeloop.messaging.outbox import enqueue
from lifeloop.messaging.policy import CHANNELS, ContactPolicy
from lifeloop.store.schema import utcnow

# --- contact policy ----------------------------------------------------------------------------------


def _stored_policy(conn: Connection, workspace_id: int) -> dict[str, Any]:
    row = conn.execute(
        select(contact_policies.c.policy).where(contact_policies.c.workspace_id == workspace_id)
    ).first()
    return dict(row.policy) if row else {}


def load_policy(conn: Connection, workspace_id: int) -> ContactPolicy:
    """The workspace's policy: the operator's changes over the seed-004 defaults."""
    return ContactPolicy.model_validate(_stored_policy(conn, workspace_id))


def _validation_error(error: ValidationError, prefix: str = "") -> InvalidInput:
    first = error.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    field = f"{prefix}{where}" if where else prefix.rstrip(".") or None
    return InvalidInput(f"{field or 'policy'}: {first['msg']}", field=field)


def update_policy(conn: Connection, workspace_id: int, changes: dict[str, Any]) -> ContactPolicy:
    """Apply ``changes`` (top-level fields replace the current values); invalid changes store nothing."""
    if not isinstance(changes, dict):
        raise InvalidInput("the policy must be a JSON object", field="policy")
    merged = {**_stored_policy(conn, workspace_id), **changes}
    try:
        policy = ContactPolicy.model_validate(merged)
    except ValidationError as error:
        raise _validation_error(error) from None
    # Only what differs from the defaults is kept, so a later change of a default reaches everyone else.
    stored = policy.model_dump(mode="json", exclude_defaults=True)
    now = utcnow()
    updated = conn.execute(
        contact_policies.update()
        .where(contact_policies.c.workspace_id == workspace_id)
        .values(policy=stored, updated_at=now)
    ).rowcount
    if not updated:
        conn.execute(
            contact_policies.insert().values(workspace_id=workspace_id, policy=stored, updated_at=now)
        )
    return policy


# --- consent -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Consent:
    profile_id: int
    channel: str
    status: str
    source: str
    updated_at: datetime


def set_consent(
    conn: Connection, workspace_id: int, profile_id: int, channel: str, *, status: str, source: str = "api"
) -> Consent:
    """Record a subscribe or unsubscribe on one channel; the next send to that channel sees it."""
    from lifeloop.profiles.service import resolve_profile_id

    if channel not in CHANNELS:
        raise InvalidInput(f"channel must be one of {', '.join(CHANNELS)}", field="channel")
    if status not in CONSENT_STATUSES:
        raise InvalidInput(f"status must be one of {', '.join(CONSENT_STATUSES)}", field="status")
    if not source or len(source) > 100:
        raise InvalidInput("source must be 1-100 characters", field="source")
    pid = resolve_profile_id(conn, workspace_id, profile_id)
    now = utcnow()
    key = (
        (consents.c.workspace_id == workspace_id)
        & (consents.c.profile_id == pid)
        & (consents.c.channel == channel)
    )
    if not conn.execute(
        consents.update().where(key).values(status=status, source=source, updated_at=now)
    ).rowcount:
        conn.execute(
            consents.insert().values(
                workspace_id=workspace_id,
                profile_id=pid,
                channel=channel,
                status=status,
                source=source,
                updated_at=now,
            )
        )
    return Consent(pid, channel, status, source, now)


def list_consents(conn: Connection, workspace_id: int, profile_id: int) -> list[Consent]:
    from lifeloop.profiles.service import resolve_profile_id

    pid = resolve_profile_id(conn, workspace_id, profile_id)
    rows = conn.execute(
        select(consents)
        .where(consents.c.workspace_id == workspace_id, consents.c.profile_id == pid)
        .order_by(consents.c.channel)
    )
    return [Consent(r.profile_id, r.channel, r.status, r.source, r.updated_at) for r in rows]


# --- sending -----------------------------------------------------------------------------------------


def send_message(
    conn: Connection,
    workspace_id: int,
    *,
    channel: str,
    content: dict[str, Any] | None = None,
    profile_id: int | None = None,
    recipient: str | None = None,
    template: str | None = None,
    transactional: bool = False,
    optimize_send_time: bool | None = None,
    idempotency_key: str | None = None,
    send_at: datetime | None = None,
    event: dict[str, Any] | None = None,
) -> tuple[OutboxEntry, bool]:
    """Queue a message for a profile (recipient from its identities at send time) or a bare address.

    ``content`` is the rendered body; without it ``template`` is rendered now for the profile. A
    template that fails to render is never sent: the message is recorded as a dead letter with the
    reason, and returned with status ``dead``. The contact policy is applied when the worker sends
    it, not here: consent or quiet hours may have changed by then. ``event`` is what the template
    reads as ``event`` (a journey's trigger event properties).
    """
    from lifeloop.messaging.templates.render import TemplateRenderError
    from lifeloop.profiles.service import resolve_profile_id

    if profile_id is not None:
        profile_id = resolve_profile_id(conn, workspace_id, profile_id)
    dead_reason: str | None = None
    if content is None and template is not None:
        try:
            content = _render(
                conn, workspace_id, template, channel=channel, profile_id=profile_id, event=event
            )
        except TemplateRenderError as error:
            dead_reason = f"template {template!r} did not render: {error.message}"
            content = {"template_error": error.message}
    if content is None:
        raise InvalidInput("give the rendered content or a template key", field="content")
    if send_at is not None and send_at.tzinfo is None:
        raise InvalidInput("send_at must include a time zone offset", field="send_at")
    if optimize_send_time is None:
        optimize_send_time = load_policy(conn, workspace_id).send_time_optimization
    return enqueue(
        conn,
        workspace_id,
        channel=channel,
        content=content,
        idempotency_key=idempotency_key or f"api-{uuid.uuid4()}",
        profile_id=profile_id,
        recipient=recipient,
        template=template,
        transactional=transactional,
        optimize_send_time=optimize_send_time,
        send_at=send_at,
        dead_reason=dead_reason,
    )


def _render(
    conn: Connection,
    workspace_id: int,
    key: str,
    *,
    channel: str,
    profile_id: int | None,
    event: dict[str, Any] | None = None,
) -> dict[str, Any]:
    from lifeloop.messaging.templates.service import get_template, profile_context, render_template

    template = get_template(conn, workspace_id, key)
    if template.channel != channel:
        raise InvalidInput(f"template {key!r} is for {template.channel}, not {channel}", field="template")
    context: dict[str, Any] = {"event": dict(event or {})}
    locale = None
    if profile_id is not None:
        context, locale = profile_context(conn, workspace_id, profile_id, event=event)
    return render_template(template, context, locale=locale).content


# --- reading deliveries ------------------------------------------------------------------------------


def _cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(f"o:{last_id}".encode()).decode().rstrip("=")


def _after(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        kind, _, value = text.partition(":")
        if kind != "o":
            raise ValueError
        return int(value)
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput("cursor is not one this API returned", field="cursor") from None


def list_deliveries(
    conn: Connection,
    workspace_id: int,
    *,
    limit: int = 50,
    cursor: str | None = None,
    status: str | None = None,
    channel: str | None = None,
    profile_id: int | None = None,
) -> tuple[list[OutboxEntry], str | None]:
    """Newest first; pass the returned cursor back for the next page (None on the last page)."""
    if status is not None and status not in OUTBOX_STATUSES:
        raise InvalidInput(f"status must be one of {', '.join(OUTBOX_STATUSES)}", field="status")
    if channel is not None and channel not in CHANNELS:
        raise InvalidInput(f"channel must be one of {', '.join(CHANNELS)}", field="channel")
    query = select(outbox).where(outbox.c.workspace_id == workspace_id)
    if cursor is not None:
        query = query.where(outbox.c.id < _after(cursor))
    if status is not None:
        query = query.where(outbox.c.status == status)
    if channel is not None:
        query = query.where(outbox.c.channel == channel)
    if profile_id is not None:
        query = query.where(outbox.c.profile_id == profile_id)
    rows = conn.execute(query.order_by(outbox.c.id.desc()).limit(limit + 1)).all()
    entries = [OutboxEntry.from_row(r) for r in rows[:limit]]
    return entries, _cursor(entries[-1].id) if len(rows) > limit else None


def get_delivery(
    conn: Connection, workspace_id: int, outbox_id: int
) -> tuple[OutboxEntry, list[dict[str, Any]]]:
    """One message with every attempt to send it."""
    row = conn.execute(
        select(outbox).where(outbox.c.workspace_id == workspace_id, outbox.c.id == outbox_id)
    ).first()
    if row is None:
        raise NotFound(f"no delivery {outbox_id} in this workspace")
    attempts = conn.execute(
        select(delivery_attempts)
        .where(delivery_attempts.c.workspace_id == workspace_id, delivery_attempts.c.outbox_id == outbox_id)
        .order_by(delivery_attempts.c.id)
    )
    return OutboxEntry.from_row(row), [dict(a._mapping) for a in attempts]


def delivery_dict(entry: OutboxEntry) -> dict[str, Any]:
    return asdict(entry)


# --- events back into the log ------------------------------------------------------------------------


def _identity_fields(identities: Sequence[dict[str, Any]], profile_id: int) -> dict[str, Any]:
    """How a lifeloop event names an existing profile so identity resolution places it there."""
    kinds = {i["kind"]: i["value"] for i in reversed(identities)}
    if "user_id" in kinds:
        return {"userId": kinds["user_id"]}
    if "anonymous_id" in kinds:
        return {"anonymousId": kinds["anonymous_id"]}
    # Only channel identities (e.g. a LINE follower): the external id joins the event to its holder.
    external = [{"type": kind, "id": value} for kind, value in kinds.items()]
    return {"anonymousId": f"lifeloop-profile-{profile_id}", "context": {"externalIds": external[:1]}}


def emit_delivery_events(
    engine: Engine,
    outcomes: Sequence[tuple[OutboxEntry, str, str | None]],
    *,
    now: datetime,
    known: dict[int, tuple[int, list[dict[str, Any]]]] | None = None,
) -> int:
    """Store ``Message Delivered`` / ``Failed`` / ``Suppressed`` events for profiles; idempotent by
    messageId ``delivery:<outbox id>:<outcome>``. ``known`` maps outbox ids to (profile id, identities)
    the caller already read. Returns how many were new."""
    from lifeloop.events.messages import parse_message
    from lifeloop.events.service import ingest
    from lifeloop.profiles.service import get_profile
    from lifeloop.store.engine import connect
    from lifeloop.workspaces.models import SourceKey

    by_workspace: dict[int, list[Any]] = {}
    with connect(engine) as conn:
        for entry, event, reason in outcomes:
            if entry.profile_id is None:
                continue
            if known and entry.id in known:
                profile_id, identities = known[entry.id]
            else:
                try:
                    profile = get_profile(conn, entry.workspace_id, entry.profile_id)
                except NotFound:
                    continue
                profile_id, identities = profile.id, profile.identities
            outcome = event.removeprefix("Message ").lower()
            properties: dict[str, Any] = {
                "channel": entry.channel,
                "template": entry.template,
                "outbox_id": entry.id,
                "idempotency_key": entry.idempotency_key,
            }
            if reason:
                properties["reason"] = reason
            raw = {
                "type": "track",
                "event": event,
                "messageId": f"delivery:{entry.id}:{outcome}",
                "timestamp": now.isoformat(),
                "properties": properties,
                **_identity_fields(identities, profile_id),
            }
            by_workspace.setdefault(entry.workspace_id, []).append(parse_message(raw, received_at=now))
    stored = 0
    for workspace_id, messages in by_workspace.items():
        # lifeloop's own events come from no write key; source_id stays NULL.
        key = SourceKey(workspace_id=workspace_id, source_id=None)  # type: ignore[arg-type]
        stored += ingest(engine, key, messages).accepted
    return stored


def outcome_counts(conn: Connection, workspace_id: int, outbox_ids: Any) -> dict[str, Any]:
    """Messages among ``outbox_ids`` (a list or a SELECT of ids) by status, and the suppressed and dead
    ones by reason: what a journey's or a broadcast's statistics show."""
    from sqlalchemy import func, select

    from lifeloop.messaging.models import outbox

    scope = (outbox.c.workspace_id == workspace_id, outbox.c.id.in_(outbox_ids))
    by_status = {
        status: int(n)
        for status, n in conn.execute(
            select(outbox.c.status, func.count()).where(*scope).group_by(outbox.c.status)
        )
    }
    reasons: dict[str, dict[str, int]] = {}
    rows = conn.execute(
        select(outbox.c.status, outbox.c.last_error, func.count())
        .where(*scope, outbox.c.status.in_(["suppressed", "dead", "deferred"]))
        .group_by(outbox.c.status, outbox.c.last_error)
    )
    for status, reason, n in rows:
        reasons.setdefault(status, {})[reason or "unknown"] = int(n)
    return {"by_status": by_status, "reasons": reasons, "total": sum(by_status.values())}
