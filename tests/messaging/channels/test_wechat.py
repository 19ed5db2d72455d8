"""WeChat official account template messages against a fake API with real token semantics."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from lifeloop.messaging.channels import wechat
from lifeloop.messaging.channels.base import OutboundMessage, SendStatus
from lifeloop.messaging.channels.wechat import WeChatAdapter
from tests.fakes.wechat import FakeWeChat

CONTENT = {
    "template_id": "TPL_ORDER_SHIPPED",
    "url": "https://shop.example.com/orders/42",
    "data": {"thing1": "保温杯", "character_string2": "SF1234567", "time3": {"value": "2026-11-23 10:00"}},
}


@pytest.fixture
def fake() -> Iterator[FakeWeChat]:
    wechat.TOKENS._tokens.clear()
    with FakeWeChat(app_id="wxapp", app_secret="s3cret") as server:
        yield server


@pytest.fixture
def adapter(fake: FakeWeChat) -> Iterator[WeChatAdapter]:
    adapter = WeChatAdapter({"app_id": "wxapp", "app_secret": "s3cret", "base_url": fake.url})
    yield adapter
    adapter.close()


def msg(
    openid: str = "oFOLLOWER1", key: str = "d-1", content: dict[str, object] = CONTENT
) -> OutboundMessage:
    return OutboundMessage(key, "wechat", openid, content)


def test_template_message_is_sent_with_values_wrapped(fake: FakeWeChat, adapter: WeChatAdapter) -> None:
    result = adapter.send(msg())
    assert result.status is SendStatus.DELIVERED and result.provider_message_id == "200228333"
    assert fake.sent == [
        {
            "touser": "oFOLLOWER1",
            "template_id": "TPL_ORDER_SHIPPED",
            "url": "https://shop.example.com/orders/42",
            "data": {
                "thing1": {"value": "保温杯"},
                "character_string2": {"value": "SF1234567"},
                "time3": {"value": "2026-11-23 10:00"},
            },
            "client_msg_id": "d-1",
        }
    ]
    (token_call,) = fake.calls("/cgi-bin/token")
    assert token_call.query == {"grant_type": "client_credential", "appid": "wxapp", "secret": "s3cret"}


@pytest.mark.parametrize("errcode", [40001, 42001])
def test_a_rejected_token_is_refreshed_once(fake: FakeWeChat, adapter: WeChatAdapter, errcode: int) -> None:
    assert adapter.send(msg(key="a")).status is SendStatus.DELIVERED
    assert adapter.send(msg(key="b")).status is SendStatus.DELIVERED
    assert fake.token_fetches == 1  # cached
    if errcode == 42001:
        fake.expire_tokens()
    else:
        fake.tokens.clear()  # revoked: another server fetched a new token
    assert adapter.send(msg(key="c")).status is SendStatus.DELIVERED
    assert fake.token_fetches == 2 and len(fake.sent) == 3


@pytest.mark.parametrize(
    ("openid", "content", "scripted", "expected"),
    [
        ("oSTRANGER", CONTENT, None, SendStatus.BLOCKED),  # 43004 require subscribe
        ("oFOLLOWER1", {**CONTENT, "template_id": "TPL_GONE"}, None, SendStatus.PERMANENT),  # 40037
        (
            "oFOLLOWER1",
            CONTENT,
            (200, {"errcode": 45009, "errmsg": "reach max api daily quota limit"}),
            SendStatus.RATE_LIMITED,
        ),
        ("oFOLLOWER1", CONTENT, (200, {"errcode": -1, "errmsg": "system error"}), SendStatus.TRANSIENT),
        ("oFOLLOWER1", CONTENT, (503, {}), SendStatus.TRANSIENT),
        ("oFOLLOWER1", {"data": {}}, None, SendStatus.PERMANENT),  # refused before sending
    ],
)
def test_errors_are_classified(
    fake: FakeWeChat,
    adapter: WeChatAdapter,
    openid: str,
    content: dict[str, object],
    scripted: tuple[int, dict[str, object]] | None,
    expected: SendStatus,
) -> None:
    if scripted:
        fake.fail_next(*scripted)
    result = adapter.send(msg(openid, content=content))
    assert result.status is expected, result.reason
    assert fake.sent == []


def test_a_user_who_refused_template_messages_is_blocked(fake: FakeWeChat, adapter: WeChatAdapter) -> None:
    fake.refused.add("oFOLLOWER2")
    result = adapter.send(msg("oFOLLOWER2"))
    assert result.status is SendStatus.BLOCKED and "43101" in (result.reason or "")


def test_wrong_app_secret_is_permanent(fake: FakeWeChat) -> None:
    adapter = WeChatAdapter({"app_id": "wxapp", "app_secret": "wrong", "base_url": fake.url})
    result = adapter.send(msg())
    adapter.close()
    assert result.status is SendStatus.PERMANENT and "40125" in (result.reason or "")
