"""The one small interface every channel adapter implements, and the outcome of a send.

The outbox calls ``send`` from a delivery worker thread; an adapter never touches the database.
It classifies the provider's answer so the outbox can decide: done, retry later, or dead letter.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol


class SendStatus(StrEnum):
    DELIVERED = "delivered"  # the provider accepted the message
    TRANSIENT = "transient"  # network error, 5xx, timeout: retry with backoff
    RATE_LIMITED = "rate_limited"  # 429 or the provider's own quota code: retry after ``retry_after``
    BLOCKED = "blocked"  # the recipient cannot be reached on this channel (unfollowed, unsubscribed)
    PERMANENT = "permanent"  # the request itself is wrong (bad token, bad payload): dead letter


@dataclass(frozen=True, slots=True)
class OutboundMessage:
    """A rendered message for one recipient on one channel."""

    idempotency_key: str  # adapters pass it to providers that support one (LINE: X-Line-Retry-Key)
    channel: str  # "line", "wecom", "wechat", "email", "sms", "webhook"
    recipient: str  # LINE userId, WeCom external_userid, openid, e-mail address, phone (+E.164), URL
    content: dict[str, Any]  # channel-specific rendered body (text, flex, subject/html/text, template data)
    metadata: dict[str, Any] = field(default_factory=dict)  # workspace_id, profile_id, delivery id…


@dataclass(frozen=True, slots=True)
class SendResult:
    status: SendStatus
    provider_message_id: str | None = None
    retry_after: float | None = None  # seconds, when the provider said so
    reason: str | None = None  # a sentence for the delivery log / dead letter
    # Of a request to many recipients (a WeCom group task), those the provider refused one by one
    # (not a contact of the advisor): they are blocked, the others delivered.
    refused: frozenset[str] = frozenset()

    @property
    def retryable(self) -> bool:
        return self.status in (SendStatus.TRANSIENT, SendStatus.RATE_LIMITED)


class ChannelAdapter(Protocol):
    """A provider client built from the workspace's (decrypted) channel configuration."""

    channel: str

    def send(self, message: OutboundMessage) -> SendResult:
        """Send one message; never raises for provider errors, classifies them instead."""
        ...

    def close(self) -> None:
        """Release connections (an httpx.Client, an SMTP session)."""
        ...
