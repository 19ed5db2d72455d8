"""SMS through a configurable HTTP provider (a fake with its own body shape and API-key header)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from lifeloop.messaging.channels.base import OutboundMessage, SendResult, SendStatus
from lifeloop.messaging.channels.sms import SmsAdapter
from tests.fakes.sms import FakeSms


@pytest.fixture
def fake() -> Iterator[FakeSms]:
    with FakeSms(api_key="sms-key") as server:
        yield server


def make_adapter(fake: FakeSms, api_key: str = "sms-key") -> SmsAdapter:
    return SmsAdapter(
        {
            "url": f"{fake.url}/v1/sms/send",
            "auth_header": f"X-Api-Key: {api_key}",
            "body_template": {"phone": "{to}", "content": "【{sender}】{text}", "sign": "{sender}"},
            "sender": "LifeLoop",
            "message_id_field": "data.id",
        }
    )


def send(fake: FakeSms, text: str = "您的验证码是 1234", to: str = "+886912345678", **kw: str) -> SendResult:
    adapter = make_adapter(fake, **kw)
    try:
        return adapter.send(OutboundMessage("d-1", "sms", to, {"text": text}))
    finally:
        adapter.close()


def test_the_body_template_is_filled_and_the_id_read_from_the_answer(fake: FakeSms) -> None:
    result = send(fake, text='含 "引号" 与 {braces}')
    assert result.status is SendStatus.DELIVERED and len(result.provider_message_id or "") == 32
    assert fake.sent == [
        {"phone": "+886912345678", "content": '【LifeLoop】含 "引号" 与 {braces}', "sign": "LifeLoop"}
    ]
    assert fake.requests[0].headers["idempotency-key"] == "d-1"


@pytest.mark.parametrize(
    ("scripted", "to", "api_key", "expected", "retry_after"),
    [
        (
            (429, {"error": "slow down"}, {"Retry_After": "12"}),
            "+886912345678",
            "sms-key",
            SendStatus.RATE_LIMITED,
            12.0,
        ),
        ((500, {"error": "boom"}, {}), "+886912345678", "sms-key", SendStatus.TRANSIENT, None),
        ((408, {}, {}), "+886912345678", "sms-key", SendStatus.TRANSIENT, None),
        (None, "0912345678", "sms-key", SendStatus.PERMANENT, None),  # 400: not E.164
        (None, "+886912345678", "bad-key", SendStatus.PERMANENT, None),  # 401
    ],
)
def test_errors_are_classified(
    fake: FakeSms,
    scripted: tuple[int, dict[str, str], dict[str, str]] | None,
    to: str,
    api_key: str,
    expected: SendStatus,
    retry_after: float | None,
) -> None:
    if scripted:
        fake.fail_next(scripted[0], scripted[1], **scripted[2])
    result = send(fake, to=to, api_key=api_key)
    assert (result.status, result.retry_after) == (expected, retry_after), result.reason
    assert fake.sent == []


def test_an_opted_out_number_is_blocked(fake: FakeSms) -> None:
    fake.opted_out.add("+886912345678")
    assert send(fake).status is SendStatus.BLOCKED
