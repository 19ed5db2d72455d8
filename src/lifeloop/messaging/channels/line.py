"""LINE Messaging API: push and multicast (text, Flex or raw message objects), webhook signatures.

Every push carries ``X-Line-Retry-Key`` derived from the idempotency key, so a retry after a
timeout is executed by LINE at most once; LINE answers a repeated key with 409, which means the
first attempt was accepted.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid
from collections.abc import Sequence
from typing import Any

import httpx

from lifeloop.messaging.channels.base import OutboundMessage, SendResult, SendStatus
from lifeloop.messaging.channels.http import json_or_empty, make_client, retry_after

API_BASE_URL = "https://api.line.me"
MAX_MESSAGES = 5  # per request, LINE's limit
MAX_MULTICAST = 500  # recipients per multicast request
_RETRY_KEY_NAMESPACE = uuid.UUID("6f1c2d9e-4d7a-5b1e-9a53-1f0e3c6b8a21")


def retry_key(idempotency_key: str) -> str:
    """The same UUID for every attempt of one message."""
    return str(uuid.uuid5(_RETRY_KEY_NAMESPACE, idempotency_key))


def signature(channel_secret: str, body: bytes) -> str:
    """What LINE sends in X-Line-Signature: base64(HMAC-SHA256(channel secret, raw body))."""
    digest = hmac.new(channel_secret.encode(), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def verify_signature(channel_secret: str, body: bytes, header: str | None) -> bool:
    return bool(header) and hmac.compare_digest(signature(channel_secret, body), header or "")


def line_messages(content: dict[str, Any]) -> list[dict[str, Any]]:
    """LINE message objects from rendered content: ``messages``, or ``text``, or ``flex`` + ``alt_text``."""
    if isinstance(content.get("messages"), list):
        messages = list(content["messages"])
    elif "flex" in content:
        flex = content["flex"]
        messages = [{"type": "flex", "altText": str(content.get("alt_text") or "")[:1500], "contents": flex}]
        if not messages[0]["altText"]:
            raise ValueError("a Flex message needs alt_text (shown in notifications and chat lists)")
    elif isinstance(content.get("text"), str):
        messages = [{"type": "text", "text": content["text"]}]
    else:
        raise ValueError("LINE content needs 'text', 'flex' (+ 'alt_text') or 'messages'")
    if not 1 <= len(messages) <= MAX_MESSAGES:
        raise ValueError(f"LINE accepts 1 to {MAX_MESSAGES} messages per send, got {len(messages)}")
    return messages


def classify(response: httpx.Response) -> SendResult:
    """A LINE API answer as a send outcome."""
    status = response.status_code
    body = json_or_empty(response)
    detail = str(body.get("message") or response.reason_phrase)
    request_id = response.headers.get("x-line-request-id")
    if 200 <= status < 300:
        sent = body.get("sentMessages") or []
        first = sent[0].get("id") if sent and isinstance(sent[0], dict) else None
        return SendResult(SendStatus.DELIVERED, provider_message_id=first or request_id)
    if status == 409:  # the retry key was already accepted: the message went out on an earlier try
        accepted = response.headers.get("x-line-accepted-request-id")
        return SendResult(SendStatus.DELIVERED, provider_message_id=accepted, reason="already accepted (409)")
    if status == 429:
        return SendResult(SendStatus.RATE_LIMITED, retry_after=retry_after(response, 60.0), reason=detail)
    if status >= 500:
        return SendResult(
            SendStatus.TRANSIENT, retry_after=retry_after(response), reason=f"LINE {status}: {detail}"
        )
    text = (detail + " " + " ".join(str(d.get("message", "")) for d in body.get("details") or [])).lower()
    if status == 403 or "hasn't added" in text or "not a friend" in text or "blocked" in text:
        return SendResult(SendStatus.BLOCKED, reason=f"LINE {status}: {detail}")
    return SendResult(SendStatus.PERMANENT, reason=f"LINE {status}: {detail}")


class LineAdapter:
    channel = "line"

    def __init__(self, config: dict[str, Any]) -> None:
        token = config.get("channel_access_token")
        if not token:
            raise ValueError("LINE needs channel_access_token (Messaging API channel → long-lived token)")
        self.client = make_client(config, API_BASE_URL)
        self.client.headers["Authorization"] = f"Bearer {token}"

    def _post(self, path: str, payload: dict[str, Any], key: str) -> SendResult:
        try:
            response = self.client.post(path, json=payload, headers={"X-Line-Retry-Key": retry_key(key)})
        except httpx.TransportError as error:  # maybe delivered: the retry key makes the retry safe
            return SendResult(SendStatus.TRANSIENT, reason=f"LINE unreachable: {error!r}")
        return classify(response)

    def send(self, message: OutboundMessage) -> SendResult:
        """Push to one user (or group/room id); content ``{"rich_menu_id": …}`` links that rich menu."""
        if "rich_menu_id" in message.content:
            return self.link_rich_menu(message.recipient, str(message.content["rich_menu_id"]))
        try:
            messages = line_messages(message.content)
        except ValueError as error:
            return SendResult(SendStatus.PERMANENT, reason=str(error))
        payload: dict[str, Any] = {"to": message.recipient, "messages": messages}
        if message.content.get("notification_disabled"):
            payload["notificationDisabled"] = True
        return self._post("/v2/bot/message/push", payload, message.idempotency_key)

    def link_rich_menu(self, user_id: str, rich_menu_id: str) -> SendResult:
        """Show ``rich_menu_id`` to one user (journeys move the menu with the stage); idempotent."""
        try:
            response = self.client.post(f"/v2/bot/user/{user_id}/richmenu/{rich_menu_id}")
        except httpx.TransportError as error:
            return SendResult(SendStatus.TRANSIENT, reason=f"LINE unreachable: {error!r}")
        return classify(response)

    def multicast(
        self, recipients: Sequence[str], content: dict[str, Any], *, idempotency_key: str
    ) -> SendResult:
        """One message to up to 500 users (no per-user outcome: LINE reports only acceptance)."""
        if not 1 <= len(recipients) <= MAX_MULTICAST:
            return SendResult(SendStatus.PERMANENT, reason=f"multicast takes 1 to {MAX_MULTICAST} user ids")
        try:
            messages = line_messages(content)
        except ValueError as error:
            return SendResult(SendStatus.PERMANENT, reason=str(error))
        payload = {"to": list(recipients), "messages": messages}
        return self._post("/v2/bot/message/multicast", payload, idempotency_key)

    def close(self) -> None:
        self.client.close()
