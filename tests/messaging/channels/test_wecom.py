"""WeCom: callback crypto (Tencent's published vector, a second implementation, forgeries) and the adapter."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from lifeloop.messaging.channels import wecom
from lifeloop.messaging.channels.base import OutboundMessage, SendStatus
from lifeloop.messaging.channels.wecom import WeComAdapter
from lifeloop.messaging.channels.wecom_crypto import CallbackCryptoError, WeComCrypto, msg_signature
from tests.fakes.wecom import FakeWeCom, WeComCallbackSender, add_contact_xml

# Tencent's sample (WXBizMsgCrypt, developer.work.weixin.qq.com/document/path/90968).
VECTOR_TOKEN = "QDG6eK"
VECTOR_KEY = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"
VECTOR_CORP = "wx5823bf96d3bd56c7"
VECTOR_SIGNATURE = "477715d11cdb4164915debcba66cb864d751f3e6"
VECTOR_TIMESTAMP, VECTOR_NONCE = "1409659813", "1372623149"
VECTOR_ENCRYPT = (
    "RypEvHKD8QQKFhvQ6QleEB4J58tiPdvo+rtK1I9qca6aM/wvqnLSV5zEPeusUiX5L5X/0lWfrf0QADHHhGd3QczcdCUpj911L3vg3W/sY"
    "YvuJTs3TUUkSUXxaccAS0qhxchrRYt66wiSpGLYL42aM6A8dTT+6k4aSknmPj48kzJs8qLjvd4Xgpue06DOdnLxAUHzM6+kDZ+HMZfJYu"
    "R+LtwGc2hgf5gsijff0ekUNXZiqATP7PF5mZxZ3Izoun1s4zG4LUMnvw2r+KqCKIw+3IQH03v+BCA9nMELNqbSf6tiWSrXJB3LAVGUcall"
    "crw8V2t9EL4EhzJWrQUax5wLVMNS0+rUPA3k22Ncx4XXZS9o0MBH27Bo6BpNelZpS+/uh9KsNlY6bHCmJU9p8g7m3fVKn28H3KDYA5Pl/"
    "T8Z1ptDAVe0lXdQ2YoyyH2uyPIGHBZZIs2pDBS8R07+qN+E7Q=="
)


def test_tencent_published_vector_verifies_and_decrypts() -> None:
    crypto = WeComCrypto(VECTOR_TOKEN, VECTOR_KEY, VECTOR_CORP)
    assert msg_signature(VECTOR_TOKEN, VECTOR_TIMESTAMP, VECTOR_NONCE, VECTOR_ENCRYPT) == VECTOR_SIGNATURE
    plain = crypto.open(VECTOR_SIGNATURE, VECTOR_TIMESTAMP, VECTOR_NONCE, VECTOR_ENCRYPT)
    assert "<Content><![CDATA[hello]]></Content>" in plain and "<MsgId>4561255354251345929</MsgId>" in plain


def test_round_trip_with_an_independent_implementation() -> None:
    key = WeComCallbackSender.new_key()
    sender = WeComCallbackSender("tok", key, "wwcorp")
    crypto = WeComCrypto("tok", key, "wwcorp")
    text = add_contact_xml("wwcorp", "zhangsan", "wmEXT", "CODE", state="活码-门店A")
    encrypted = sender.encrypt(text)
    params = sender.params(encrypted)
    assert crypto.open(params["msg_signature"], params["timestamp"], params["nonce"], encrypted) == text
    ours, sig = crypto.seal(text, "1700000000", "42")
    assert sender.signature("1700000000", "42", ours) == sig
    assert crypto.decrypt(ours) == text


def _forgeries() -> list[tuple[str, str, str, str, str]]:
    """(case, signature, timestamp, nonce, ciphertext) — each must be refused."""
    sender = WeComCallbackSender(VECTOR_TOKEN, VECTOR_KEY, VECTOR_CORP)
    ts, nonce = VECTOR_TIMESTAMP, VECTOR_NONCE
    flipped = "B" + VECTOR_ENCRYPT[1:]
    foreign = WeComCallbackSender(VECTOR_TOKEN, VECTOR_KEY, "wwsomeoneelse").encrypt("<xml/>")
    return [
        (
            "signed with a guessed token",
            msg_signature("guess", ts, nonce, VECTOR_ENCRYPT),
            ts,
            nonce,
            VECTOR_ENCRYPT,
        ),
        ("replayed with another timestamp", VECTOR_SIGNATURE, "1409659814", nonce, VECTOR_ENCRYPT),
        ("replayed with another nonce", VECTOR_SIGNATURE, ts, "1", VECTOR_ENCRYPT),
        ("no signature", "", ts, nonce, VECTOR_ENCRYPT),
        ("ciphertext altered", VECTOR_SIGNATURE, ts, nonce, flipped),
        (
            "altered and re-signed with a guess",
            msg_signature("guess", ts, nonce, flipped),
            ts,
            nonce,
            flipped,
        ),
        ("corrupted in transit (signed)", sender.signature(ts, nonce, flipped), ts, nonce, flipped),
        ("addressed to another corp", sender.signature(ts, nonce, foreign), ts, nonce, foreign),
        ("not base64", sender.signature(ts, nonce, "!!!"), ts, nonce, "!!!"),
        ("truncated", sender.signature(ts, nonce, VECTOR_ENCRYPT[:24]), ts, nonce, VECTOR_ENCRYPT[:24]),
    ]


_FORGERIES = _forgeries()


# Ids are the case names: the ciphertexts are random, and xdist workers must collect the same ids.
@pytest.mark.parametrize(
    ("case", "signature", "timestamp", "nonce", "encrypted"), _FORGERIES, ids=[f[0] for f in _FORGERIES]
)
def test_forged_or_corrupted_callbacks_are_rejected(
    case: str, signature: str, timestamp: str, nonce: str, encrypted: str
) -> None:
    crypto = WeComCrypto(VECTOR_TOKEN, VECTOR_KEY, VECTOR_CORP)
    with pytest.raises(CallbackCryptoError):
        crypto.open(signature, timestamp, nonce, encrypted)


@pytest.mark.parametrize("key", ["short", "!" * 43])
def test_a_malformed_encoding_aes_key_is_refused(key: str) -> None:
    with pytest.raises(ValueError, match="EncodingAESKey"):
        WeComCrypto("t", key, "corp")


# -- the adapter -----------------------------------------------------------------------------------


@pytest.fixture
def fake() -> Iterator[FakeWeCom]:
    with FakeWeCom(corp_id="wwcorp", secret="contact-secret") as server:
        yield server


def make_adapter(fake: FakeWeCom, secret: str = "contact-secret") -> WeComAdapter:
    return WeComAdapter({"corp_id": "wwcorp", "secret": secret, "sender": "zhangsan", "base_url": fake.url})


def msg(recipient: str = "wmEXT1", key: str = "d-1", **content: object) -> OutboundMessage:
    return OutboundMessage(key, "wecom", recipient, content or {"text": "您好，我是您的专属顾问"})


def test_welcome_message_uses_the_welcome_code(fake: FakeWeCom) -> None:
    code = fake.add_contact("wmEXT1")
    adapter = make_adapter(fake)
    result = adapter.send(msg(text="欢迎！", welcome_code=code))
    again = adapter.send(msg(text="欢迎！", welcome_code=code))  # a code is single use
    adapter.close()
    assert result.status is SendStatus.DELIVERED
    (call, _) = fake.calls("/cgi-bin/externalcontact/send_welcome_msg")
    assert call.json == {"welcome_code": code, "text": {"content": "欢迎！"}}
    assert again.status is SendStatus.PERMANENT and "41051" in (again.reason or "")


def test_one_to_one_message_goes_through_the_advisor(fake: FakeWeCom) -> None:
    fake.add_contact("wmEXT1")
    adapter = make_adapter(fake)
    result = adapter.send(msg())
    stranger = adapter.send(msg(recipient="wmSTRANGER", key="d-2"))
    adapter.close()
    assert result.status is SendStatus.DELIVERED and result.provider_message_id
    call = fake.calls("/cgi-bin/externalcontact/add_msg_template")[0]
    assert call.json == {
        "chat_type": "single",
        "external_userid": ["wmEXT1"],
        "sender": "zhangsan",
        "text": {"content": "您好，我是您的专属顾问"},
    }
    assert stranger.status is SendStatus.BLOCKED


def test_the_access_token_is_cached_and_refreshed_when_it_expires(fake: FakeWeCom) -> None:
    fake.add_contact("wmEXT1")
    wecom.TOKENS._tokens.clear()
    adapter = make_adapter(fake)
    assert all(adapter.send(msg(key=f"k{i}")).status is SendStatus.DELIVERED for i in range(3))
    assert fake.token_fetches == 1
    fake.expire_tokens()
    assert adapter.send(msg(key="k4")).status is SendStatus.DELIVERED
    assert fake.token_fetches == 2
    adapter.close()


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (200, {"errcode": 45009, "errmsg": "api freq out of limit"}, SendStatus.RATE_LIMITED),
        (200, {"errcode": -1, "errmsg": "system busy"}, SendStatus.TRANSIENT),
        (502, {}, SendStatus.TRANSIENT),
        (429, {}, SendStatus.RATE_LIMITED),
        (200, {"errcode": 84061, "errmsg": "not external contact"}, SendStatus.BLOCKED),
        (200, {"errcode": 41033, "errmsg": "missing text"}, SendStatus.PERMANENT),
    ],
)
def test_errors_are_classified(
    fake: FakeWeCom, status: int, body: dict[str, object], expected: SendStatus
) -> None:
    fake.add_contact("wmEXT1")
    fake.fail_next(status, body)
    adapter = make_adapter(fake)
    result = adapter.send(msg())
    adapter.close()
    assert result.status is expected, result.reason


def test_a_wrong_secret_is_permanent(fake: FakeWeCom) -> None:
    adapter = make_adapter(fake, secret="wrong")
    result = adapter.send(msg())
    adapter.close()
    assert result.status is SendStatus.PERMANENT and "40001" in (result.reason or "")


def test_one_task_carries_many_customers_and_names_those_wecom_refused(fake: FakeWeCom) -> None:
    for user in ("wmA", "wmB"):
        fake.add_contact(user)
    adapter = make_adapter(fake)
    result = adapter.multicast(["wmA", "wmB", "wmGONE"], {"text": "会员日"}, idempotency_key="g-1")
    too_many = adapter.multicast([f"wm{i}" for i in range(10_001)], {"text": "x"}, idempotency_key="g-2")
    adapter.close()
    (call,) = fake.calls("/cgi-bin/externalcontact/add_msg_template")
    assert call.json["external_userid"] == ["wmA", "wmB", "wmGONE"] and call.json["sender"] == "zhangsan"
    assert result.status is SendStatus.DELIVERED and result.refused == {"wmGONE"}
    assert too_many.status is SendStatus.PERMANENT and "10000" in (too_many.reason or "")
