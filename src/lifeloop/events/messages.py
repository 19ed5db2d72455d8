"""Validation of Segment-spec messages into ``Message`` records, with clock-skew correction.

Hand-written rather than a Pydantic model: it runs for every event on the hot path, and each error
must name the exact field (``batch[3].event``) in the words a client developer understands.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from lifeloop.errors import BatchInvalid, InvalidInput, PayloadTooLarge
from lifeloop.profiles.models import IDENTITY_KINDS

MAX_EVENT_BYTES = 32 * 1024
MAX_BATCH_BYTES = 500 * 1024
MAX_ID_LENGTH = 255

# Top-level fields with a column of their own; anything else is kept in ``extra``.
_KNOWN = frozenset(
    {
        "type",
        "messageId",
        "userId",
        "anonymousId",
        "event",
        "name",
        "properties",
        "traits",
        "context",
        "integrations",
        "timestamp",
        "originalTimestamp",
        "sentAt",
        "receivedAt",
        "groupId",
        "previousId",
        "writeKey",
    }
)
MESSAGE_TYPES = ("track", "identify", "page", "screen", "group", "alias")

# context.externalIds[].type and identify traits that link a channel identity to the profile.
EXTERNAL_ID_KINDS = {
    "email": "email",
    "phone": "phone",
    "line_user_id": "line_user_id",
    "line": "line_user_id",
    "wecom_external_userid": "wecom_external_userid",
    "external_userid": "wecom_external_userid",
    "wechat_openid": "wechat_openid",
    "openid": "wechat_openid",
    "wechat_unionid": "wechat_unionid",
    "unionid": "wechat_unionid",
}
# Identify traits named like a channel identity kind link that identity (every kind but the two ids).
_TRAIT_ID_KINDS = tuple(kind for kind in IDENTITY_KINDS if kind not in ("user_id", "anonymous_id"))


@dataclass(slots=True)
class Message:
    type: str
    message_id: str
    timestamp: datetime
    received_at: datetime
    user_id: str | None = None
    anonymous_id: str | None = None
    event: str | None = None
    name: str | None = None
    group_id: str | None = None
    previous_id: str | None = None
    original_timestamp: datetime | None = None
    sent_at: datetime | None = None
    properties: dict[str, Any] | None = None
    traits: dict[str, Any] | None = None
    context: dict[str, Any] | None = None
    integrations: dict[str, Any] | None = None
    extra: dict[str, Any] | None = None
    external_ids: list[tuple[str, str]] = field(default_factory=list)


def parse_time(value: Any, field_name: str) -> datetime:
    """An ISO-8601 string as aware UTC; a time without offset is taken as UTC."""
    if not isinstance(value, str):
        raise InvalidInput(f"{field_name} must be an ISO-8601 date-time string", field=field_name)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput(
            f"{field_name} is not an ISO-8601 date-time: {value[:40]!r}", field=field_name
        ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _identifier(value: Any, field_name: str) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise InvalidInput(f"{field_name} must be a string", field=field_name)
    text = value if isinstance(value, str) else str(value)  # Segment accepts numeric ids
    if len(text) > MAX_ID_LENGTH:
        raise InvalidInput(f"{field_name} is longer than {MAX_ID_LENGTH} characters", field=field_name)
    return text


def _id_field(value: Any, prefix: str, name: str) -> str | None:
    """``_identifier`` with the field name built only when needed: this runs several times per event."""
    if type(value) is str and len(value) <= MAX_ID_LENGTH:
        return value or None
    if value is None:
        return None
    return _identifier(value, prefix + name)


def _object(value: Any, field_name: str) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidInput(f"{field_name} must be a JSON object", field=field_name)
    return value


def _object_field(value: Any, prefix: str, name: str) -> dict[str, Any] | None:
    if value is None or type(value) is dict:
        return value
    return _object(value, prefix + name)


def normalise_identity(kind: str, value: Any) -> str | None:
    """The canonical text of a channel identity (e-mail lower-cased, phone as + and digits)."""
    if value is None or isinstance(value, bool) or not isinstance(value, str | int):
        return None
    text = str(value).strip()
    if kind == "email":
        text = text.lower()
        return text if "@" in text and len(text) <= MAX_ID_LENGTH else None
    if kind == "phone":
        digits = "".join(ch for ch in text if ch.isdigit())
        return ("+" if text.startswith("+") else "") + digits if len(digits) >= 6 else None
    return text if 0 < len(text) <= MAX_ID_LENGTH else None


def _external_ids(msg: Message, prefix: str) -> list[tuple[str, str]]:
    external = msg.context.get("externalIds") if msg.context else None
    if external is None and msg.type != "identify":
        return []
    found: list[tuple[str, str]] = []
    if external is not None:
        if not isinstance(external, list):
            raise InvalidInput(
                f"{prefix}context.externalIds must be a list", field=f"{prefix}context.externalIds"
            )
        for i, item in enumerate(external):
            if not isinstance(item, dict):
                raise InvalidInput(
                    f"{prefix}context.externalIds[{i}] must be an object with id and type",
                    field=f"{prefix}context.externalIds[{i}]",
                )
            kind = EXTERNAL_ID_KINDS.get(str(item.get("type", "")).lower())
            value = normalise_identity(kind, item.get("id")) if kind else None
            if kind and value:
                found.append((kind, value))
    if msg.type == "identify" and msg.traits:
        for kind in _TRAIT_ID_KINDS:
            value = normalise_identity(kind, msg.traits.get(kind))
            if value:
                found.append((kind, value))
    return list(dict.fromkeys(found))


_NO_DEFAULTS: dict[str, Any] = {}


def parse_message(
    raw: Any,
    *,
    received_at: datetime,
    forced_type: str | None = None,
    defaults: dict[str, Any] | None = None,
    prefix: str = "",
) -> Message:
    """Validate one message. ``defaults`` carries a batch's shared context, integrations and sentAt.

    The hot path of ingest: valid input takes the cheap branches (field names in errors are built only
    when there is an error); every check and its order is what a client sees, so keep them.
    """
    if not isinstance(raw, dict):
        raise InvalidInput(f"{prefix or 'body'} must be a JSON object", field=prefix.rstrip(".") or None)
    msg_type = forced_type or raw.get("type")
    if msg_type not in MESSAGE_TYPES:
        raise InvalidInput(
            f"{prefix}type must be one of {', '.join(MESSAGE_TYPES)} (got {msg_type!r})",
            field=f"{prefix}type",
        )
    if defaults is None:
        defaults = _NO_DEFAULTS
    get = raw.get

    user_id = _id_field(get("userId"), prefix, "userId")
    anonymous_id = _id_field(get("anonymousId"), prefix, "anonymousId")
    message_id = _id_field(get("messageId"), prefix, "messageId") or f"ll-{uuid.uuid4()}"

    context = _object_field(get("context"), prefix, "context")
    if defaults.get("context"):
        context = {**defaults["context"], **(context or {})}
    integrations = _object_field(get("integrations"), prefix, "integrations")
    if defaults.get("integrations"):
        integrations = {**defaults["integrations"], **(integrations or {})}

    msg = Message(msg_type, message_id, received_at, received_at, user_id, anonymous_id)
    msg.context = context
    msg.integrations = integrations

    if msg_type == "alias":
        msg.previous_id = _id_field(get("previousId"), prefix, "previousId")
        if msg.previous_id is None:
            raise InvalidInput(f"{prefix}previousId is required for alias calls", field=f"{prefix}previousId")
        if user_id is None:
            raise InvalidInput(f"{prefix}userId is required for alias calls", field=f"{prefix}userId")
    elif user_id is None and anonymous_id is None:
        raise InvalidInput(f"{prefix}userId or anonymousId is required", field=f"{prefix}userId")

    if msg_type == "track":
        event = get("event")
        if not isinstance(event, str) or not event.strip():
            raise InvalidInput(f"{prefix}event is required for track calls", field=f"{prefix}event")
        if len(event) > MAX_ID_LENGTH:
            raise InvalidInput(
                f"{prefix}event is longer than {MAX_ID_LENGTH} characters", field=f"{prefix}event"
            )
        msg.event = event
        msg.properties = _object_field(get("properties"), prefix, "properties") or {}
    elif msg_type == "page" or msg_type == "screen":
        properties: dict[str, Any] = _object_field(get("properties"), prefix, "properties") or {}
        msg.properties = properties
        name = get("name")
        if name is not None and not isinstance(name, str):
            raise InvalidInput(f"{prefix}name must be a string", field=f"{prefix}name")
        msg.name = name[:MAX_ID_LENGTH] if name else None
        # As analytics.js does, page name and category are also readable as properties.
        if msg.name is not None:
            properties.setdefault("name", msg.name)
        category = get("category")
        if isinstance(category, str):
            properties.setdefault("category", category)
    elif msg_type == "identify" or msg_type == "group":
        msg.traits = _object_field(get("traits"), prefix, "traits") or {}
        if msg_type == "group":
            msg.group_id = _id_field(get("groupId"), prefix, "groupId")
            if msg.group_id is None:
                raise InvalidInput(f"{prefix}groupId is required for group calls", field=f"{prefix}groupId")

    sent_at_raw = get("sentAt", defaults.get("sentAt"))
    if sent_at_raw is not None:
        msg.sent_at = parse_time(sent_at_raw, f"{prefix}sentAt")
    original_raw = get("timestamp", get("originalTimestamp"))
    if original_raw is not None:
        msg.original_timestamp = parse_time(original_raw, f"{prefix}timestamp")
        # Segment's correction for a wrong device clock: the clock's error is sentAt - receivedAt.
        if msg.sent_at is not None:
            msg.timestamp = received_at - (msg.sent_at - msg.original_timestamp)
        else:
            msg.timestamp = msg.original_timestamp

    if raw.keys() - _KNOWN:
        msg.extra = {k: v for k, v in raw.items() if k not in _KNOWN}
    if context is not None or msg_type == "identify":
        msg.external_ids = _external_ids(msg, prefix)
    return msg


def message_from_row(row: Any) -> Message:
    """A stored event as the ``Message`` it was ingested as (it was validated then)."""
    msg = Message(
        type=row.type,
        message_id=row.message_id,
        timestamp=row.timestamp,
        received_at=row.received_at,
        user_id=row.user_id,
        anonymous_id=row.anonymous_id,
        event=row.event,
        name=row.name,
        group_id=row.group_id,
        previous_id=row.previous_id,
        original_timestamp=row.original_timestamp,
        sent_at=row.sent_at,
        properties=row.properties,
        traits=row.traits,
        context=row.context,
        integrations=row.integrations,
        extra=row.extra,
    )
    msg.external_ids = _external_ids(msg, "")
    return msg


def check_event_size(raw: Any, field_name: str) -> None:
    size = len(orjson.dumps(raw))
    if size > MAX_EVENT_BYTES:
        raise PayloadTooLarge(
            f"{field_name} is {size} bytes; one event may be at most {MAX_EVENT_BYTES} bytes (32 KB)",
            field=field_name,
        )


def parse_batch(body: Any, *, received_at: datetime) -> list[Message]:
    """Validate a /v1/batch body. Every item is checked; all failures are reported together."""
    if not isinstance(body, dict):
        raise InvalidInput("body must be a JSON object with a batch array")
    items = body.get("batch")
    if not isinstance(items, list):
        raise InvalidInput("batch is required and must be an array of messages", field="batch")
    if not items:
        raise InvalidInput("batch is empty", field="batch")
    defaults = {
        "context": _object(body.get("context"), "context"),
        "integrations": _object(body.get("integrations"), "integrations"),
        "sentAt": body.get("sentAt"),
    }
    messages: list[Message] = []
    errors: list[dict[str, Any]] = []
    too_large: list[dict[str, Any]] = []
    for index, raw in enumerate(items):
        prefix = f"batch[{index}]."
        try:
            check_event_size(raw, f"batch[{index}]")
            messages.append(parse_message(raw, received_at=received_at, defaults=defaults, prefix=prefix))
        except PayloadTooLarge as error:
            too_large.append({"index": index, "field": error.field, "message": error.message})
        except InvalidInput as error:
            errors.append({"index": index, "field": error.field, "message": error.message})
    if too_large:
        first = too_large[0]
        raise PayloadTooLarge(
            f"{len(too_large)} of {len(items)} events are over 32 KB; nothing was stored. "
            f"First: {first['message']}",
            field=first["field"],
            errors=too_large + errors,
        )
    if errors:
        first = errors[0]
        raise BatchInvalid(
            f"{len(errors)} of {len(items)} messages are invalid; nothing was stored. "
            f"First: {first['message']}",
            field=first["field"],
            errors=errors,
        )
    return messages
