"""/webhooks/wecom/{workspace}: URL verification and encrypted "add external contact" callbacks."""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import urlencode

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from lifeloop.messaging.channels import wecom
from lifeloop.messaging.channels.base import OutboundMessage, SendStatus
from lifeloop.messaging.channels.config import save_config
from lifeloop.messaging.channels.registry import build_adapter
from lifeloop.messaging.channels.wecom_crypto import msg_signature
from tests.conftest import Brand, snapshot
from tests.fakes.wecom import FakeWeCom, WeComCallbackSender, add_contact_xml
from tests.messaging.inbound.helpers import stored_events

CORP, TOKEN = "ww5823bf96d3bd56c7", "callback-token"
AES_KEY = WeComCallbackSender.new_key()


@pytest.fixture
def fake() -> Iterator[FakeWeCom]:
    wecom.TOKENS._tokens.clear()
    with FakeWeCom(corp_id=CORP, secret="contact-secret") as server:
        yield server


@pytest.fixture
def wecom_brand(engine: sa.Engine, brand: Brand, fake: FakeWeCom) -> Brand:
    with engine.begin() as conn:
        save_config(
            conn,
            brand.workspace_id,
            channel="wecom",
            credentials={
                "corp_id": CORP,
                "secret": "contact-secret",
                "token": TOKEN,
                "encoding_aes_key": AES_KEY,
            },
            settings={"base_url": fake.url, "sender": "zhangsan"},
        )
    return brand


@pytest.fixture
def sender() -> WeComCallbackSender:
    return WeComCallbackSender(TOKEN, AES_KEY, CORP)


def test_url_verification_answers_the_decrypted_echostr(
    client: TestClient, wecom_brand: Brand, sender: WeComCallbackSender
) -> None:
    echostr = sender.encrypt("6744013512519212541")
    query = urlencode({**sender.params(echostr), "echostr": echostr})
    response = client.get(f"/webhooks/wecom/acme?{query}")
    assert response.status_code == 200 and response.text == "6744013512519212541"
    forged = urlencode({**sender.params(echostr), "echostr": echostr, "msg_signature": "0" * 40})
    assert client.get(f"/webhooks/wecom/acme?{forged}").status_code == 401


def test_add_external_contact_becomes_an_event_and_a_welcome_can_be_sent(
    client: TestClient, engine: sa.Engine, wecom_brand: Brand, sender: WeComCallbackSender, fake: FakeWeCom
) -> None:
    code = fake.add_contact("wmEXTERNAL01", advisor="zhangsan")
    body, params = sender.envelope(
        add_contact_xml(CORP, "zhangsan", "wmEXTERNAL01", code, state="store-taipei-101")
    )
    response = client.post(f"/webhooks/wecom/acme?{urlencode(params)}", content=body)
    assert response.status_code == 200 and response.text == ""
    (stored,) = stored_events(engine, wecom_brand.workspace_id)
    assert stored["event"] == "Channel Followed"
    assert stored["properties"] == {
        "channel": "wecom",
        "external_userid": "wmEXTERNAL01",
        "userid": "zhangsan",
        "change_type": "add_external_contact",
        "state": "store-taipei-101",
        "welcome_code": code,
        "corp_id": CORP,
    }
    assert stored["context"]["externalIds"][0] == {
        "type": "wecom_external_userid",
        "id": "wmEXTERNAL01",
        "collection": "users",
    }

    # WeCom retries a callback it got no answer for: the same event is stored once.
    again = client.post(f"/webhooks/wecom/acme?{urlencode(params)}", content=body)
    assert again.status_code == 200 and len(stored_events(engine, wecom_brand.workspace_id)) == 1

    # What a welcome journey does with the event, through the workspace's stored configuration.
    with engine.connect() as conn:
        adapter = build_adapter(conn, wecom_brand.workspace_id, "wecom")
    welcome = OutboundMessage(
        "welcome-1",
        "wecom",
        "wmEXTERNAL01",
        {"text": "欢迎！", "welcome_code": stored["properties"]["welcome_code"]},
    )
    assert adapter.send(welcome).status is SendStatus.DELIVERED
    adapter.close()


def _forged(
    sender: WeComCallbackSender, body: bytes, params: dict[str, str]
) -> list[tuple[str, bytes, dict[str, str]]]:
    encrypted = re.search(rb"<Encrypt><!\[CDATA\[(.*?)\]\]>", body).group(1).decode()  # type: ignore[union-attr]
    other = WeComCallbackSender("guessed-token", AES_KEY, CORP)
    wrong_key = WeComCallbackSender(TOKEN, WeComCallbackSender.new_key(), CORP)
    wk_body, wk_params = wrong_key.envelope(add_contact_xml(CORP, "zhangsan", "wmEVIL", "c"))
    og_body, og_params = other.envelope(add_contact_xml(CORP, "zhangsan", "wmEVIL", "c"))
    return [
        ("signature from a guessed token", og_body, og_params),
        ("right token, wrong EncodingAESKey", wk_body, wk_params),
        ("signature of another timestamp", body, {**params, "timestamp": str(int(params["timestamp"]) + 1)}),
        ("zero signature", body, {**params, "msg_signature": "0" * 40}),
        (
            "signature over a different ciphertext",
            body,
            {
                **params,
                "msg_signature": msg_signature(
                    TOKEN, params["timestamp"], params["nonce"], encrypted[:-4] + "AAA="
                ),
            },
        ),
    ]


def test_forged_callbacks_are_rejected_and_nothing_changes(
    client: TestClient, engine: sa.Engine, wecom_brand: Brand, sender: WeComCallbackSender
) -> None:
    body, params = sender.envelope(add_contact_xml(CORP, "zhangsan", "wmEXT", "c"))
    for case, forged_body, forged_params in _forged(sender, body, params):
        before = snapshot(engine)
        response = client.post(f"/webhooks/wecom/acme?{urlencode(forged_params)}", content=forged_body)
        assert response.status_code == 401, case
        assert snapshot(engine) == before, case


@pytest.mark.parametrize(
    "body",
    [
        b"<xml><ToUserName>x</ToUserName></xml>",  # no Encrypt
        b"not xml",
        b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><xml><Encrypt>&a;</Encrypt></xml>',
    ],
)
def test_malformed_callbacks_are_400(client: TestClient, wecom_brand: Brand, body: bytes) -> None:
    params = {"msg_signature": "0" * 40, "timestamp": "1", "nonce": "2"}
    assert client.post(f"/webhooks/wecom/acme?{urlencode(params)}", content=body).status_code == 400


def test_other_callbacks_are_acknowledged_without_an_event(
    client: TestClient, engine: sa.Engine, wecom_brand: Brand, sender: WeComCallbackSender
) -> None:
    inner = (
        f"<xml><ToUserName><![CDATA[{CORP}]]></ToUserName><MsgType><![CDATA[event]]></MsgType>"
        "<Event><![CDATA[change_external_chat]]></Event><ChatId><![CDATA[wr1]]></ChatId></xml>"
    )
    body, params = sender.envelope(inner)
    assert client.post(f"/webhooks/wecom/acme?{urlencode(params)}", content=body).status_code == 200
    assert stored_events(engine, wecom_brand.workspace_id) == []
