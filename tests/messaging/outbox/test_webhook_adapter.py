"""The signed webhook adapter against a real local receiver: signature, headers, classification."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from lifeloop.messaging.channels.base import OutboundMessage, SendStatus
from lifeloop.messaging.channels.webhook import (
    WebhookAdapter,
    from_config,
    parse_retry_after,
    sign,
    verify_signature,
)
from tests.fakes.webhook_server import FakeWebhookServer, Reply

SECRET = "whsec_test"


def message(key: str = "k1", recipient: str = "") -> OutboundMessage:
    return OutboundMessage(key, "webhook", recipient, {"text": "hi"}, {"outbox_id": 7})


def test_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    body = b'{"a":1}'
    header = sign(SECRET, body, 1_700_000_000)
    expected = hmac.new(SECRET.encode(), b'1700000000.{"a":1}', hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={expected}"
    assert verify_signature(SECRET, header, body, now=1_700_000_100)
    assert not verify_signature(SECRET, header, body + b" ", now=1_700_000_100)  # body changed
    assert not verify_signature("other", header, body, now=1_700_000_100)  # wrong secret
    assert not verify_signature(SECRET, header, body, now=1_700_000_000 + 301)  # replayed too late
    assert not verify_signature(SECRET, None, body) and not verify_signature(SECRET, "v1=abc", body)
    rotated = f"{header},v1={'0' * 64}"  # several v1 values while a secret rotates
    assert verify_signature(SECRET, rotated, body, now=1_700_000_000)


def test_posts_signed_json_with_the_idempotency_key() -> None:
    with FakeWebhookServer(SECRET) as server:
        adapter = WebhookAdapter(secret=SECRET)
        result = adapter.send(message(recipient=server.url))
        adapter.close()
    assert result.status == SendStatus.DELIVERED and result.provider_message_id == "msg_1"
    (received,) = server.received
    assert received.key == "k1" and received.status == 200
    assert received.body == {
        "id": "k1",
        "channel": "webhook",
        "recipient": server.url,
        "content": {"text": "hi"},
        "metadata": {"outbox_id": 7},
    }


def test_configured_url_is_used_when_the_recipient_is_not_a_url() -> None:
    with FakeWebhookServer(SECRET) as server:
        adapter = from_config({"secret": SECRET, "url": server.url, "timeout": 5})
        assert adapter.send(message(recipient="+886912345678")).status == SendStatus.DELIVERED
        adapter.close()
    assert server.received[0].body["recipient"] == "+886912345678"  # type: ignore[index]
    no_url = WebhookAdapter(secret=SECRET)
    assert no_url.send(message(recipient="ann@example.com")).status == SendStatus.PERMANENT
    no_url.close()
    with pytest.raises(ValueError):
        from_config({"url": "http://x/"})


@pytest.mark.parametrize(
    ("reply", "status", "retry_after"),
    [
        (Reply(200, {"id": "p-9"}), SendStatus.DELIVERED, None),
        (Reply(202, None, {"X-Message-Id": "hdr-1"}), SendStatus.DELIVERED, None),
        (Reply(429, {}, {"Retry-After": "7"}), SendStatus.RATE_LIMITED, 7.0),
        (Reply(503, {}, {"Retry-After": "3"}), SendStatus.TRANSIENT, 3.0),
        (Reply(500), SendStatus.TRANSIENT, None),
        (Reply(408), SendStatus.TRANSIENT, None),
        (Reply(410, {"error": "gone"}), SendStatus.BLOCKED, None),
        (Reply(400, {"error": "bad"}), SendStatus.PERMANENT, None),
        (Reply(401), SendStatus.PERMANENT, None),
    ],
)
def test_answers_are_classified(reply: Reply, status: SendStatus, retry_after: float | None) -> None:
    with FakeWebhookServer(SECRET) as server:
        server.then(reply)
        adapter = WebhookAdapter(secret=SECRET)
        result = adapter.send(message(recipient=server.url))
        adapter.close()
    assert result.status == status and result.retry_after == retry_after
    if status != SendStatus.DELIVERED:
        assert result.reason and result.reason.startswith(f"HTTP {reply.status}")
    elif reply.headers:
        assert result.provider_message_id == "hdr-1"


def test_a_wrong_secret_is_refused_by_the_receiver() -> None:
    with FakeWebhookServer(SECRET) as server:
        adapter = WebhookAdapter(secret="not-the-secret")
        result = adapter.send(message(recipient=server.url))
        adapter.close()
    assert result.status == SendStatus.PERMANENT and server.accepted == {}


def test_timeouts_are_transient() -> None:
    with FakeWebhookServer(SECRET, delay=0.5) as server:
        adapter = WebhookAdapter(secret=SECRET, timeout=0.1)
        result = adapter.send(message(recipient=server.url))
        adapter.close()
    assert result.status == SendStatus.TRANSIENT and "timed out" in (result.reason or "")


def test_retry_after_as_seconds_or_http_date() -> None:
    now = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(format_datetime(now + timedelta(seconds=90), usegmt=True), now=now) == 90.0
    assert parse_retry_after(format_datetime(now - timedelta(seconds=90), usegmt=True), now=now) == 0.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None
