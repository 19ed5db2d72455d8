"""Generic signed webhook: POST the rendered message as JSON to an HTTPS endpoint the brand runs.

Each request carries ``X-Lifeloop-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<body>">`` (the scheme
Stripe uses, so receivers can reject replays by the timestamp) and ``Idempotency-Key``: a retry of the
same outbox message reuses it, so a receiver that de-duplicates by it sees each message once.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import orjson

from lifeloop.messaging.channels.base import OutboundMessage, SendResult, SendStatus

SIGNATURE_HEADER = "X-Lifeloop-Signature"
DEFAULT_TOLERANCE = 300.0  # seconds a receiver accepts between the signed time and its clock


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The signature header value for ``body`` sent at ``timestamp``."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify_signature(
    secret: str,
    header: str | None,
    body: bytes,
    *,
    now: float | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
) -> bool:
    """True when ``header`` signs ``body`` with ``secret`` and its time is within ``tolerance`` seconds."""
    if not header:
        return False
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if sep:
            parts.setdefault(key, []).append(value)
    try:
        timestamp = int(parts["t"][0])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    expected = sign(secret, body, timestamp).rpartition("v1=")[2]
    # Several v1 values are allowed while a secret is being rotated.
    return any(hmac.compare_digest(expected, candidate) for candidate in parts.get("v1", []))


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


class WebhookAdapter:
    """Sends to ``message.recipient`` when it is an http(s) URL, else to the configured ``url``."""

    channel = "webhook"

    def __init__(
        self,
        *,
        secret: str,
        url: str | None = None,
        timeout: float = 10.0,
        headers: Mapping[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not secret:
            raise ValueError("a webhook channel needs a signing secret")
        self.secret = secret
        self.url = url
        self._client = httpx.Client(timeout=timeout, headers=dict(headers or {}), transport=transport)

    def _target(self, message: OutboundMessage) -> str | None:
        if message.recipient.startswith(("http://", "https://")):
            return message.recipient
        return self.url

    def send(self, message: OutboundMessage) -> SendResult:
        target = self._target(message)
        if target is None:
            return SendResult(
                SendStatus.PERMANENT, reason="no webhook URL: recipient is not a URL and none set"
            )
        body = orjson.dumps(
            {
                "id": message.idempotency_key,
                "channel": message.channel,
                "recipient": message.recipient,
                "content": message.content,
                "metadata": message.metadata,
            }
        )
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": message.idempotency_key,
            SIGNATURE_HEADER: sign(self.secret, body, int(time.time())),
        }
        try:
            response = self._client.post(target, content=body, headers=headers)
        except httpx.TimeoutException:
            return SendResult(SendStatus.TRANSIENT, reason=f"timed out posting to {target}")
        except httpx.HTTPError as error:
            return SendResult(SendStatus.TRANSIENT, reason=f"could not reach {target}: {error}")
        return classify(response)

    def close(self) -> None:
        self._client.close()


def classify(response: httpx.Response) -> SendResult:
    """2xx delivered; 429 rate limited (Retry-After); 408/425/5xx transient; 410 gone; other 4xx permanent."""
    code = response.status_code
    snippet = response.text[:200].strip()
    if 200 <= code < 300:
        return SendResult(SendStatus.DELIVERED, provider_message_id=_provider_id(response))
    if code == 429:
        return SendResult(
            SendStatus.RATE_LIMITED,
            retry_after=parse_retry_after(response.headers.get("retry-after")),
            reason=f"HTTP 429 {snippet}".strip(),
        )
    if code in (408, 425) or code >= 500:
        return SendResult(
            SendStatus.TRANSIENT,
            retry_after=parse_retry_after(response.headers.get("retry-after")),
            reason=f"HTTP {code} {snippet}".strip(),
        )
    if code == 410:  # the endpoint says this recipient is gone for good
        return SendResult(SendStatus.BLOCKED, reason=f"HTTP 410 {snippet}".strip())
    return SendResult(SendStatus.PERMANENT, reason=f"HTTP {code} {snippet}".strip())


def _provider_id(response: httpx.Response) -> str | None:
    header = response.headers.get("x-message-id")
    if header:
        return header
    try:
        data: Any = response.json()
    except ValueError:
        return None
    value = data.get("id") if isinstance(data, dict) else None
    return str(value) if value is not None else None


def from_config(config: Mapping[str, Any]) -> WebhookAdapter:
    """Build from a channel configuration: ``secret`` (required), ``url``, ``timeout``, ``headers``."""
    return WebhookAdapter(
        secret=str(config.get("secret") or ""),
        url=config.get("url"),
        timeout=float(config.get("timeout", 10.0)),
        headers=config.get("headers"),
    )
