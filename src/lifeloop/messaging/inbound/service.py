"""Channel activity → Segment-style events, through the normal ingest path.

Each channel writes through its own ingest source (``channel:line``, ``channel:wecom``,
``channel:email``), created on first use. Message ids are derived from what the provider
redelivers (LINE ``webhookEventId``, WeCom's callback fields, the tracking token), so a retried
callback is stored once.
"""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError

from lifeloop.errors import Conflict, InvalidInput, NotFound, Unauthorized
from lifeloop.events.messages import Message, parse_message
from lifeloop.events.service import IngestResult, ingest
from lifeloop.messaging.channels import line
from lifeloop.messaging.channels.config import load_config
from lifeloop.messaging.channels.wecom_crypto import CallbackCryptoError, WeComCrypto
from lifeloop.messaging.inbound.tokens import TrackingToken
from lifeloop.store.engine import connect
from lifeloop.store.schema import utcnow
from lifeloop.workspaces.models import SourceKey
from lifeloop.workspaces.service import create_source, list_sources, workspace_id_of

LINE_EVENTS = {
    "follow": "Channel Followed",
    "unfollow": "Channel Unfollowed",
    "message": "Message Received",
    "postback": "Menu Clicked",
}
WECOM_CHANGES = {
    "add_external_contact": "Channel Followed",
    "add_half_external_contact": "Channel Followed",
    "del_external_contact": "Channel Unfollowed",
    "del_follow_user": "Channel Unfollowed",
}
EMAIL_EVENTS = {"open": "Message Opened", "click": "Message Clicked", "unsubscribe": "Unsubscribed"}


def _digest(*parts: Any) -> str:
    return hashlib.sha256("\x00".join(str(p) for p in parts).encode()).hexdigest()[:40]


def channel_source(engine: Engine, workspace_id: int, channel: str) -> SourceKey:
    """The ingest source a channel's inbound events are recorded under (created on first use)."""
    name = f"channel:{channel}"
    for _attempt in range(2):
        with connect(engine) as conn:
            found = [s for s in list_sources(conn, workspace_id) if s.name == name]
        if found:
            return SourceKey(workspace_id=workspace_id, source_id=found[0].id)
        try:
            with engine.begin() as conn:
                source, _key = create_source(conn, workspace_id, name=name)  # the write key is never used
            return SourceKey(workspace_id=workspace_id, source_id=source.id)
        except (Conflict, IntegrityError):  # created concurrently by another request: read it
            continue
    raise Conflict(f"could not create the {name} source")


def _record(engine: Engine, workspace_id: int, channel: str, raws: list[dict[str, Any]]) -> IngestResult:
    if not raws:
        return IngestResult(accepted=0, duplicates=0, event_ids=[])
    received = utcnow()
    messages: list[Message] = [parse_message(raw, received_at=received) for raw in raws]
    return ingest(engine, channel_source(engine, workspace_id, channel), messages)


def _track(
    event: str, *, message_id: str, channel: str, kind: str, external_id: str, **fields: Any
) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "type": "track",
        "event": event,
        "messageId": message_id,
        "anonymousId": f"{channel}:{external_id}",
        "context": {
            "channel": channel,
            "externalIds": [{"type": kind, "id": external_id, "collection": "users"}],
        },
    }
    raw.update({k: v for k, v in fields.items() if v is not None})
    return raw


# -- LINE ------------------------------------------------------------------------------------------


def line_webhook(
    engine: Engine, slug: str, body: bytes, signature: str | None, *, name: str | None
) -> IngestResult:
    """Verify X-Line-Signature over the raw body, then record follow/unfollow/message/postback."""
    workspace_id = workspace_id_of(engine, slug)
    with connect(engine) as conn:
        config, credentials = load_config(conn, workspace_id, "line", name=name)
    secret = str(credentials.get("channel_secret") or "")
    if not secret or not line.verify_signature(secret, body, signature):
        raise Unauthorized("X-Line-Signature does not match the body: not sent by LINE for this channel")
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise InvalidInput("body is not valid JSON") from None
    events = payload.get("events") if isinstance(payload, dict) else None
    if not isinstance(events, list):
        raise InvalidInput("LINE webhook body needs an events array", field="events")
    raws = [raw for e in events if isinstance(e, dict) and (raw := line_event(e, payload.get("destination")))]
    result = _record(engine, workspace_id, "line", raws)
    welcome = (config.settings or {}).get("welcome_template")
    follows = [r for r in raws if r["event"] == "Channel Followed"]
    if welcome and follows:
        _welcome(engine, workspace_id, str(welcome), follows)
    return result


def _welcome(engine: Engine, workspace_id: int, template: str, follows: list[dict[str, Any]]) -> None:
    """The channel's welcome template, queued for each new friend within the webhook call (seed 001:
    welcome within seconds of a follow). One per follow event: a redelivered webhook queues nothing.

    A returning friend's profile is known and gives the template its traits and locale; a new friend
    is not resolved yet, so the welcome goes to the LINE user id itself.
    """
    from lifeloop.messaging.service import send_message
    from lifeloop.profiles.service import find_by_identity

    with engine.begin() as conn:
        for follow in follows:
            user_id = follow["context"]["externalIds"][0]["id"]
            try:
                profile_id: int | None = find_by_identity(conn, workspace_id, "line_user_id", user_id)
            except NotFound:
                profile_id = None
            send_message(
                conn,
                workspace_id,
                channel="line",
                profile_id=profile_id,
                recipient=None if profile_id is not None else user_id,
                template=template,
                transactional=True,  # an answer to the customer's own action: no cap, no quiet hours
                idempotency_key=f"welcome:{follow['messageId']}",
            )


def line_event(event: dict[str, Any], destination: Any = None) -> dict[str, Any] | None:
    """One LINE webhook event as a track call, or None for kinds we do not record."""
    name = LINE_EVENTS.get(str(event.get("type")))
    user_id = (event.get("source") or {}).get("userId")
    if name is None or not isinstance(user_id, str) or not user_id:
        return None
    properties: dict[str, Any] = {"channel": "line", "destination": destination}
    kind = event["type"]
    if kind == "follow":
        properties["is_unblocked"] = bool((event.get("follow") or {}).get("isUnblocked", False))
    if kind in ("follow", "message", "postback") and event.get("replyToken"):
        properties["reply_token"] = event["replyToken"]  # a reply is free; a welcome can use it for ~1 min
    if kind == "message":
        message = event.get("message") or {}
        properties.update(message_type=message.get("type"), message_id=message.get("id"))
        if message.get("type") == "text":
            properties["text"] = message.get("text")
    if kind == "postback":
        postback = event.get("postback") or {}
        properties["data"] = postback.get("data")
        properties["item"] = postback.get("data")  # rich-menu postbacks: the data names the item
        if postback.get("params"):
            properties["params"] = postback["params"]
    source = event.get("source") or {}
    if source.get("type") in ("group", "room"):
        properties[f"{source['type']}_id"] = source.get(f"{source['type']}Id")
    timestamp = event.get("timestamp")
    when = (
        datetime.fromtimestamp(timestamp / 1000, UTC).isoformat()
        if isinstance(timestamp, int | float)
        else None
    )
    message_id = event.get("webhookEventId") or f"line-{_digest(user_id, kind, timestamp, properties)}"
    return _track(
        name,
        message_id=str(message_id),
        channel="line",
        kind="line_user_id",
        external_id=user_id,
        timestamp=when,
        properties={k: v for k, v in properties.items() if v is not None},
    )


# -- WeCom -----------------------------------------------------------------------------------------


def _wecom_crypto(engine: Engine, workspace_id: int, name: str | None) -> WeComCrypto:
    with connect(engine) as conn:
        _config, credentials = load_config(conn, workspace_id, "wecom", name=name)
    try:
        return WeComCrypto(
            str(credentials.get("token") or ""),
            str(credentials.get("encoding_aes_key") or ""),
            str(credentials.get("corp_id") or ""),
        )
    except ValueError as error:
        raise InvalidInput(f"WeCom callback is misconfigured: {error}", field="encoding_aes_key") from None


def _parse_xml(text: bytes) -> dict[str, str]:
    """A flat WeCom XML document as a dict; refuses DTDs (no entity tricks on untrusted input)."""
    if b"<!DOCTYPE" in text or b"<!ENTITY" in text:
        raise InvalidInput("XML with a DTD is not accepted")
    try:
        root = ET.fromstring(text)
    except ET.ParseError as error:
        raise InvalidInput(f"body is not valid XML: {error}") from None
    return {child.tag: (child.text or "").strip() for child in root}


def wecom_verify_url(
    engine: Engine, slug: str, *, signature: str, timestamp: str, nonce: str, echostr: str, name: str | None
) -> str:
    """WeCom's URL check when the callback is saved: verify, decrypt echostr, answer its plaintext."""
    crypto = _wecom_crypto(engine, workspace_id_of(engine, slug), name)
    try:
        return crypto.open(signature, timestamp, nonce, echostr)
    except CallbackCryptoError as error:
        raise Unauthorized(f"WeCom callback rejected: {error}") from None


def wecom_callback(
    engine: Engine, slug: str, body: bytes, *, signature: str, timestamp: str, nonce: str, name: str | None
) -> IngestResult:
    """Verify and decrypt a callback; record external-contact changes as events."""
    workspace_id = workspace_id_of(engine, slug)
    crypto = _wecom_crypto(engine, workspace_id, name)
    encrypted = _parse_xml(body).get("Encrypt")
    if not encrypted:
        raise InvalidInput("WeCom callback XML has no Encrypt element", field="Encrypt")
    try:
        plain = crypto.open(signature, timestamp, nonce, encrypted)
    except CallbackCryptoError as error:
        raise Unauthorized(f"WeCom callback rejected: {error}") from None
    raw = wecom_event(_parse_xml(plain.encode()), corp_id=crypto.receive_id)
    return _record(engine, workspace_id, "wecom", [raw] if raw else [])


def wecom_event(fields: dict[str, str], *, corp_id: str) -> dict[str, Any] | None:
    """A decrypted change_external_contact callback as a track call (None for other callbacks)."""
    if fields.get("Event") != "change_external_contact":
        return None
    change = fields.get("ChangeType", "")
    name = WECOM_CHANGES.get(change)
    external = fields.get("ExternalUserID")
    if name is None or not external:
        return None
    created = fields.get("CreateTime", "")
    properties = {
        "channel": "wecom",
        "external_userid": external,
        "userid": fields.get("UserID"),  # the advisor (导购) the customer added
        "change_type": change,
        "state": fields.get("State") or None,  # the 渠道活码 state: where the customer came from
        "welcome_code": fields.get("WelcomeCode") or None,  # send_welcome_msg within 20 seconds
        "corp_id": corp_id,
        "by": {"del_external_contact": "advisor", "del_follow_user": "customer"}.get(change),
    }
    when = datetime.fromtimestamp(int(created), UTC).isoformat() if created.isdigit() else None
    return _track(
        name,
        message_id=f"wecom-{_digest(corp_id, change, external, fields.get('UserID'), created)}",
        channel="wecom",
        kind="wecom_external_userid",
        external_id=external,
        timestamp=when,
        properties={k: v for k, v in properties.items() if v is not None},
    )


# -- e-mail ----------------------------------------------------------------------------------------


def email_activity(engine: Engine, token: TrackingToken) -> IngestResult:
    """An open, click or unsubscribe from a verified tracking token."""
    if token.kind == "open":  # the first open of a delivery; image proxies refetch the pixel
        message_id = f"email-open-{_digest(token.message)}"
    elif token.kind == "click":  # each link once per minute: scanners and double clicks count once
        minute = int(utcnow().timestamp() // 60)
        message_id = f"email-click-{_digest(token.message, token.url, minute)}"
    else:
        message_id = f"email-unsub-{_digest(token.message)}"
    properties = {"channel": "email", "message": token.message, "url": token.url}
    raw = _track(
        EMAIL_EVENTS[token.kind],
        message_id=message_id,
        channel="email",
        kind="email",
        external_id=token.recipient,
        properties={k: v for k, v in properties.items() if v is not None},
    )
    if token.user_id:
        raw["userId"] = token.user_id
    result = _record(engine, token.workspace_id, "email", [raw])
    if token.kind == "unsubscribe":
        _withdraw_email_consent(engine, token)
    return result


def _withdraw_email_consent(engine: Engine, token: TrackingToken) -> None:
    """The unsubscribe takes effect for the next send: e-mail consent is withdrawn on the profile."""
    from lifeloop.messaging.service import set_consent
    from lifeloop.profiles.resolver import resolve_pending
    from lifeloop.profiles.service import find_by_identity

    kind, value = ("user_id", token.user_id) if token.user_id else ("email", token.recipient)
    for attempt in range(2):
        with engine.begin() as conn:
            try:
                profile_id = find_by_identity(conn, token.workspace_id, kind, value)
            except NotFound:
                profile_id = None
            if profile_id is not None:
                set_consent(
                    conn, token.workspace_id, profile_id, "email", status="unsubscribed", source="email link"
                )
                return
        if attempt == 0:  # rare: the recipient is known only from this event, so place it first
            resolve_pending(engine, token.workspace_id)
