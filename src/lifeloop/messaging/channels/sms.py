"""SMS through any HTTP provider: a configured URL, auth header and JSON body template.

``body_template`` is JSON whose string values may contain ``{to}``, ``{text}`` and ``{sender}``,
e.g. ``{"phone": "{to}", "content": "{text}", "sign": "{sender}"}``; ``message_id_field`` is the
dotted path of the provider's id in its answer. Outcomes follow the status code: 2xx delivered,
429 rate limited (Retry-After), 408/5xx transient, 410 blocked (number opted out), other 4xx permanent.
"""

from __future__ import annotations

from typing import Any

import httpx

from lifeloop.messaging.channels.base import OutboundMessage, SendResult, SendStatus
from lifeloop.messaging.channels.http import json_or_empty, make_client, retry_after

DEFAULT_BODY = {"to": "{to}", "text": "{text}", "from": "{sender}"}


def fill(template: Any, values: dict[str, str]) -> Any:
    """The body template with placeholders replaced in every string (never evaluated as code)."""
    if isinstance(template, str):
        for name, value in values.items():
            template = template.replace("{" + name + "}", value)
        return template
    if isinstance(template, dict):
        return {k: fill(v, values) for k, v in template.items()}
    if isinstance(template, list):
        return [fill(v, values) for v in template]
    return template


def _dig(body: Any, path: str | None) -> str | None:
    if not path:
        return None
    for part in path.split("."):
        if not isinstance(body, dict) or part not in body:
            return None
        body = body[part]
    return None if body is None else str(body)


class SmsAdapter:
    channel = "sms"

    def __init__(self, config: dict[str, Any]) -> None:
        url = config.get("url")
        if not url:
            raise ValueError("SMS needs the provider's url")
        self.url = str(url)
        self.client = make_client(config, self.url)
        header = config.get("auth_header")  # "Authorization: Bearer …" or "X-Api-Key: …"
        if header:
            name, _, value = str(header).partition(":")
            self.client.headers[name.strip()] = value.strip()
        self.body_template = config.get("body_template") or DEFAULT_BODY
        self.sender = str(config.get("sender") or "")
        self.message_id_field = config.get("message_id_field")

    def send(self, message: OutboundMessage) -> SendResult:
        text = message.content.get("text")
        if not text:
            return SendResult(SendStatus.PERMANENT, reason="SMS content needs text")
        values = {"to": message.recipient, "text": str(text), "sender": self.sender}
        payload = fill(self.body_template, values)
        try:
            response = self.client.post(
                self.url, json=payload, headers={"Idempotency-Key": message.idempotency_key}
            )
        except httpx.TransportError as error:
            return SendResult(SendStatus.TRANSIENT, reason=f"SMS provider unreachable: {error!r}")
        status = response.status_code
        body = json_or_empty(response)
        detail = f"SMS provider {status}: {str(body or response.text)[:200]}"
        if 200 <= status < 300:
            return SendResult(SendStatus.DELIVERED, provider_message_id=_dig(body, self.message_id_field))
        if status == 429:
            return SendResult(SendStatus.RATE_LIMITED, retry_after=retry_after(response, 30.0), reason=detail)
        if status == 408 or status >= 500:
            return SendResult(SendStatus.TRANSIENT, retry_after=retry_after(response), reason=detail)
        if status == 410:
            return SendResult(SendStatus.BLOCKED, reason=detail)
        return SendResult(SendStatus.PERMANENT, reason=detail)

    def close(self) -> None:
        self.client.close()
