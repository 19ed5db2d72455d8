"""E-mail over real SMTP (aiosmtpd): MIME shape, RFC 8058 headers, tracking links, SMTP errors."""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from lifeloop.messaging.channels.base import OutboundMessage, SendStatus
from lifeloop.messaging.channels.email import EmailAdapter
from lifeloop.messaging.inbound.tokens import verify
from tests.fakes.smtp import FakeSmtp

PUBLIC = "https://crm.example.com"
HTML = (
    '<html><body><p>Hi {name}</p><a href="https://shop.example.com/sale?utm=1&amp;x=2">Sale</a>'
    "<a href='mailto:help@example.com'>Help</a> <a href=\"%%unsubscribe_url%%\">Unsubscribe</a></body></html>"
)


@pytest.fixture
def smtp() -> Iterator[FakeSmtp]:
    with FakeSmtp() as server:
        yield server


@pytest.fixture
def adapter(smtp: FakeSmtp) -> Iterator[EmailAdapter]:
    adapter = EmailAdapter(
        {
            "host": "127.0.0.1",
            "port": smtp.port,
            "security": "none",
            "from_address": "news@brand.example",
            "from_name": "Brand 品牌",
            "public_url": PUBLIC,
            "unsubscribe_mailto": "unsubscribe@brand.example",
            "workspace_id": 7,
        }
    )
    yield adapter
    adapter.close()


def msg(to: str = "ann@example.com", key: str = "delivery-1") -> OutboundMessage:
    return OutboundMessage(
        key,
        "email",
        to,
        {"subject": "雙11 早鳥優惠", "html": HTML, "text": "Sale: https://shop.example.com/sale"},
        metadata={"user_id": "u-1"},
    )


def _links(html: str) -> list[str]:
    return re.findall(r"""(?:href|src)=["']([^"']+)["']""", html)


def test_a_multipart_message_with_one_click_unsubscribe_and_tracking(
    smtp: FakeSmtp, adapter: EmailAdapter
) -> None:
    result = adapter.send(msg())
    assert result.status is SendStatus.DELIVERED
    ((mail_from, rcpts, email),) = smtp.handler.received
    assert (mail_from, rcpts) == ("news@brand.example", ["ann@example.com"])
    assert (
        email["Subject"] == "雙11 早鳥優惠" and email["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    )
    assert email.get_content_type() == "multipart/alternative"
    assert result.provider_message_id == email["Message-ID"]

    https, mailto = [part.strip(" <>") for part in email["List-Unsubscribe"].split(",")]
    assert mailto == "mailto:unsubscribe@brand.example?subject=unsubscribe"
    assert https.startswith(f"{PUBLIC}/u/")
    unsubscribe = verify(urlsplit(https).path.removeprefix("/u/"), kind="unsubscribe")
    assert (unsubscribe.workspace_id, unsubscribe.recipient, unsubscribe.message, unsubscribe.user_id) == (
        7,
        "ann@example.com",
        "delivery-1",
        "u-1",
    )

    html = email.get_body(("html",)).get_content()
    links = _links(html)
    click = verify(urlsplit(links[0]).path.removeprefix("/t/c/"), kind="click")
    assert click.url == "https://shop.example.com/sale?utm=1&x=2"  # the real target, unescaped
    assert links[1] == "mailto:help@example.com"  # only web links are tracked
    assert links[2] == https  # the placeholder became the signed unsubscribe link
    pixel = links[3]
    assert pixel.startswith(f"{PUBLIC}/t/o/") and pixel.endswith(".gif")
    assert (
        verify(urlsplit(pixel).path.removeprefix("/t/o/").removesuffix(".gif"), kind="open").message
        == "delivery-1"
    )
    assert email.get_body(("plain",)).get_content().strip() == "Sale: https://shop.example.com/sale"


def test_the_message_id_is_the_same_on_every_attempt(smtp: FakeSmtp, adapter: EmailAdapter) -> None:
    first, second, other = adapter.send(msg()), adapter.send(msg()), adapter.send(msg(key="delivery-2"))
    assert first.provider_message_id == second.provider_message_id != other.provider_message_id
    assert len(smtp.handler.received) == 3  # one SMTP session carried all three


@pytest.mark.parametrize(
    ("rcpt_answer", "data_answer", "expected"),
    [
        ("550 5.1.1 <ann@example.com>: Recipient address rejected: User unknown", None, SendStatus.BLOCKED),
        ("451 4.7.1 Greylisted, try again later", None, SendStatus.TRANSIENT),
        ("452 4.2.2 Mailbox full", None, SendStatus.TRANSIENT),
        ("553 5.1.3 Bad recipient address syntax", None, SendStatus.BLOCKED),
        (None, "554 5.7.1 Message rejected as spam", SendStatus.PERMANENT),
        (None, "421 4.3.0 Service shutting down", SendStatus.TRANSIENT),
    ],
)
def test_smtp_answers_are_classified(
    smtp: FakeSmtp,
    adapter: EmailAdapter,
    rcpt_answer: str | None,
    data_answer: str | None,
    expected: SendStatus,
) -> None:
    if rcpt_answer:
        smtp.handler.refuse_rcpt["ann@example.com"] = rcpt_answer
    if data_answer:
        smtp.handler.refuse_data.append(data_answer)
    result = adapter.send(msg())
    assert result.status is expected, result.reason
    assert (rcpt_answer or data_answer or "")[:3] in (result.reason or "")
    # The adapter recovers: the next message goes through on the same or a new session.
    smtp.handler.refuse_rcpt.clear()
    assert adapter.send(msg(key="next")).status is SendStatus.DELIVERED


def test_an_unreachable_server_is_transient() -> None:
    with FakeSmtp() as smtp:
        port = smtp.port
    adapter = EmailAdapter(
        {
            "host": "127.0.0.1",
            "port": port,
            "security": "none",
            "from_address": "a@b.c",
            "public_url": PUBLIC,
            "workspace_id": 1,
            "timeout": 2,
        }
    )
    assert adapter.send(msg()).status is SendStatus.TRANSIENT
    adapter.close()


def test_content_without_a_subject_is_refused_before_sending(smtp: FakeSmtp, adapter: EmailAdapter) -> None:
    result = adapter.send(OutboundMessage("k", "email", "ann@example.com", {"text": "no subject"}))
    assert result.status is SendStatus.PERMANENT and smtp.handler.received == []


def test_tracking_can_be_turned_off(smtp: FakeSmtp) -> None:
    adapter = EmailAdapter(
        {
            "host": "127.0.0.1",
            "port": smtp.port,
            "security": "none",
            "from_address": "a@b.c",
            "public_url": PUBLIC,
            "workspace_id": 1,
            "track_opens": False,
            "track_clicks": False,
        }
    )
    assert adapter.send(msg()).status is SendStatus.DELIVERED
    adapter.close()
    html = smtp.handler.received[0][2].get_body(("html",)).get_content()
    assert "/t/o/" not in html and "/t/c/" not in html and 'href="https://shop.example.com/sale' in html
