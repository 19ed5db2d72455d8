"""The LINE adapter against a local server that behaves like the Messaging API."""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid
from collections.abc import Iterator

import pytest

from lifeloop.messaging.channels.base import OutboundMessage, SendStatus
from lifeloop.messaging.channels.line import LineAdapter, retry_key, signature, verify_signature
from tests.fakes.line import NOT_FRIEND, FakeLine

USER = "U4af4980629a1b2c3d4e5f60718293a4b"


@pytest.fixture
def fake() -> Iterator[FakeLine]:
    with FakeLine(token="line-token") as server:
        yield server


@pytest.fixture
def adapter(fake: FakeLine) -> Iterator[LineAdapter]:
    adapter = LineAdapter({"channel_access_token": "line-token", "base_url": fake.url, "timeout": 5})
    yield adapter
    adapter.close()


def msg(key: str = "delivery-1", to: str = USER, **content: object) -> OutboundMessage:
    return OutboundMessage(key, "line", to, content or {"text": "歡迎加入！"})


def test_push_sends_text_with_bearer_token_and_a_deterministic_retry_key(
    fake: FakeLine, adapter: LineAdapter
) -> None:
    result = adapter.send(msg())
    assert result.status is SendStatus.DELIVERED and result.provider_message_id == "1"
    (call,) = fake.calls("/v2/bot/message/push")
    assert call.headers["authorization"] == "Bearer line-token"
    assert call.json == {"to": USER, "messages": [{"type": "text", "text": "歡迎加入！"}]}
    key = call.headers["x-line-retry-key"]
    assert uuid.UUID(key).version == 5 and retry_key("delivery-1") == key != retry_key("delivery-2")


def test_a_retried_push_is_not_delivered_twice(fake: FakeLine, adapter: LineAdapter) -> None:
    first, again = adapter.send(msg()), adapter.send(msg())
    assert first.status is again.status is SendStatus.DELIVERED
    assert again.reason == "already accepted (409)" and again.provider_message_id
    assert len(fake.delivered) == 1 and len(fake.calls("/v2/bot/message/push")) == 2


def test_flex_message_needs_alt_text(fake: FakeLine, adapter: LineAdapter) -> None:
    bubble = {"type": "bubble", "body": {"type": "box", "layout": "vertical", "contents": []}}
    assert adapter.send(msg(flex=bubble, alt_text="新品上架")).status is SendStatus.DELIVERED
    assert fake.delivered[-1][1] == {"type": "flex", "altText": "新品上架", "contents": bubble}
    missing = adapter.send(msg(key="d2", flex=bubble))
    assert missing.status is SendStatus.PERMANENT and "alt_text" in (missing.reason or "")
    assert len(fake.calls("/v2/bot/message/push")) == 1  # the bad one never left


@pytest.mark.parametrize(
    ("status", "body", "headers", "expected", "retry_after"),
    [
        (429, {"message": "Too Many Requests"}, {"Retry_After": "7"}, SendStatus.RATE_LIMITED, 7.0),
        (429, {"message": "You have reached your monthly limit."}, {}, SendStatus.RATE_LIMITED, 60.0),
        (500, {"message": "Internal Server Error"}, {}, SendStatus.TRANSIENT, None),
        (503, {"message": "Service Unavailable"}, {"Retry_After": "2"}, SendStatus.TRANSIENT, 2.0),
        (
            403,
            {"message": "Access to this API is not available for your account"},
            {},
            SendStatus.BLOCKED,
            None,
        ),
        (400, {"message": "The request body has 2 error(s)"}, {}, SendStatus.PERMANENT, None),
    ],
)
def test_provider_errors_are_classified(
    fake: FakeLine,
    adapter: LineAdapter,
    status: int,
    body: dict[str, str],
    headers: dict[str, str],
    expected: SendStatus,
    retry_after: float | None,
) -> None:
    fake.fail_next(status, body, **headers)
    result = adapter.send(msg())
    assert (result.status, result.retry_after) == (expected, retry_after)
    assert body["message"] in (result.reason or "") or result.status is SendStatus.RATE_LIMITED
    assert fake.delivered == []


def test_a_user_who_has_not_added_the_account_is_blocked(fake: FakeLine, adapter: LineAdapter) -> None:
    fake.not_friends.add(USER)
    result = adapter.send(msg())
    assert result.status is SendStatus.BLOCKED and NOT_FRIEND in (result.reason or "")


def test_an_invalid_token_is_permanent() -> None:
    with FakeLine(token="the-real-token") as fake:
        adapter = LineAdapter({"channel_access_token": "revoked", "base_url": fake.url})
        result = adapter.send(msg())
        adapter.close()
    assert result.status is SendStatus.PERMANENT and "401" in (result.reason or "")


def test_an_unreachable_api_is_transient() -> None:
    with FakeLine() as fake:  # started and stopped: nothing listens on its port any more
        url = fake.url
    adapter = LineAdapter({"channel_access_token": "t", "base_url": url, "timeout": 1})
    result = adapter.send(msg())
    adapter.close()
    assert result.status is SendStatus.TRANSIENT and result.retryable


def test_multicast_reaches_friends_with_one_request(fake: FakeLine, adapter: LineAdapter) -> None:
    users = [f"U{i:032x}" for i in range(3)]
    fake.not_friends.add(users[1])
    result = adapter.multicast(users, {"text": "雙11 開跑"}, idempotency_key="campaign-1")
    assert result.status is SendStatus.DELIVERED
    assert [u for u, _ in fake.delivered] == [users[0], users[2]]
    (call,) = fake.calls("/v2/bot/message/multicast")
    assert call.json["to"] == users and call.headers["x-line-retry-key"] == retry_key("campaign-1")
    assert adapter.multicast([], {"text": "x"}, idempotency_key="k").status is SendStatus.PERMANENT


def test_more_than_five_messages_are_refused_before_sending(fake: FakeLine, adapter: LineAdapter) -> None:
    result = adapter.send(msg(messages=[{"type": "text", "text": str(i)} for i in range(6)]))
    assert result.status is SendStatus.PERMANENT and fake.requests == []


SECRET = "8c570fa6dd201bb328f1c1eac23a96d8"
BODY = b'{"destination":"Uxxx","events":[]}'


@pytest.mark.parametrize(
    ("secret", "body", "header", "valid"),
    [
        (
            SECRET,
            BODY,
            base64.b64encode(hmac.new(SECRET.encode(), BODY, hashlib.sha256).digest()).decode(),
            True,
        ),
        (SECRET, BODY + b" ", signature(SECRET, BODY), False),  # body changed after signing
        ("another-channel-secret", BODY, signature(SECRET, BODY), False),  # signed by someone else
        (SECRET, BODY, None, False),
        (SECRET, BODY, "", False),
    ],
)
def test_webhook_signature(secret: str, body: bytes, header: str | None, valid: bool) -> None:
    assert verify_signature(secret, body, header) is valid
