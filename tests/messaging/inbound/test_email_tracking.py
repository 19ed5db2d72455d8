"""E-mail opens, clicks and one-click unsubscribes, from the links the adapter really put in a mail."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from lifeloop.messaging.channels.base import OutboundMessage
from lifeloop.messaging.channels.email import EmailAdapter
from lifeloop.messaging.inbound.routes import PIXEL
from lifeloop.messaging.inbound.tokens import TrackingToken, sign
from lifeloop.messaging.models import consents
from tests.conftest import Brand, snapshot
from tests.messaging.inbound.helpers import stored_events

TARGET = "https://shop.example.com/p/42?utm_source=email"


def links(brand: Brand, user_id: str | None = "u-9") -> dict[str, str]:
    """The open, click and unsubscribe paths of a real rendered e-mail."""
    adapter = EmailAdapter(
        {
            "host": "127.0.0.1",
            "from_address": "news@brand.example",
            "public_url": "https://crm.example.com",
            "workspace_id": brand.workspace_id,
        }
    )
    email = adapter.build(
        OutboundMessage(
            "delivery-77",
            "email",
            "Mei@Example.com",
            {"subject": "Hi", "html": f'<a href="{TARGET}">Buy</a>'},
            metadata={"user_id": user_id} if user_id else {},
        )
    )
    html = email.get_body(("html",)).get_content()
    found = [urlsplit(u).path for u in re.findall(r'(?:href|src)="([^"]+)"', html)]
    unsubscribe = urlsplit(email["List-Unsubscribe"].strip("<>")).path
    return {"click": found[0], "open": found[1], "unsubscribe": unsubscribe}


def test_open_click_and_unsubscribe_become_events(
    client: TestClient, engine: sa.Engine, brand: Brand
) -> None:
    paths = links(brand)
    opened = client.get(paths["open"])
    assert (
        opened.status_code == 200
        and opened.content == PIXEL
        and opened.headers["content-type"] == "image/gif"
    )
    assert opened.headers["cache-control"].startswith("no-store")
    clicked = client.get(paths["click"], follow_redirects=False)
    assert clicked.status_code == 302 and clicked.headers["location"] == TARGET

    page = client.get(paths["unsubscribe"])  # a GET shows a button; link scanners unsubscribe nobody
    assert page.status_code == 200 and '<form method="post"' in page.text and "Mei@Example.com" in page.text
    assert [e["event"] for e in stored_events(engine, brand.workspace_id)] == [
        "Message Opened",
        "Message Clicked",
    ]

    done = client.post(
        paths["unsubscribe"],
        content=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert done.status_code == 200 and "unsubscribed" in done.text
    stored = stored_events(engine, brand.workspace_id)
    assert [e["event"] for e in stored] == ["Message Opened", "Message Clicked", "Unsubscribed"]
    for event in stored:
        assert event["user_id"] == "u-9" and event["properties"]["channel"] == "email"
        assert event["properties"]["message"] == "delivery-77"
        assert event["context"]["externalIds"][0]["id"] == "Mei@Example.com"
    assert stored[1]["properties"]["url"] == TARGET
    # The unsubscribe withdraws e-mail consent, so the contact policy suppresses the next e-mail.
    with engine.connect() as conn:
        consent = conn.execute(
            sa.select(consents.c.channel, consents.c.status, consents.c.source).where(
                consents.c.workspace_id == brand.workspace_id
            )
        ).all()
    assert consent == [("email", "unsubscribed", "email link")]


def test_repeated_opens_and_unsubscribes_are_recorded_once(
    client: TestClient, engine: sa.Engine, brand: Brand
) -> None:
    paths = links(brand, user_id=None)
    for _ in range(3):
        assert client.get(paths["open"]).status_code == 200
        assert client.post(paths["unsubscribe"], data={"List-Unsubscribe": "One-Click"}).status_code == 200
    stored = stored_events(engine, brand.workspace_id)
    assert [e["event"] for e in stored] == ["Message Opened", "Unsubscribed"]
    assert stored[0]["anonymous_id"] == "email:Mei@Example.com" and stored[0]["user_id"] is None


def _tampered(brand: Brand) -> list[tuple[str, str, str]]:
    paths = links(brand)
    click_token = paths["click"].removeprefix("/t/c/")
    body, mac = click_token.split(".")
    evil = sign(TrackingToken("click", brand.workspace_id, "email", "a@b.c", "m", url="https://evil.example"))
    evil_body = evil.split(".")[0]
    return [
        ("get", "/t/o/" + paths["open"].removeprefix("/t/o/")[:-8] + "xx.gif", "open token altered"),
        ("get", f"/t/c/{evil_body}.{mac}", "click redirected elsewhere, old signature"),
        ("get", f"/t/c/{body}.", "signature stripped"),
        ("get", "/t/c/" + paths["unsubscribe"].removeprefix("/u/"), "unsubscribe token used as a click"),
        ("get", "/t/o/12345.gif", "a guessed id"),
        ("post", "/u/" + click_token, "click token used to unsubscribe"),
        ("post", "/u/bm90IGEgdG9rZW4", "no signature at all"),
    ]


def test_forged_or_altered_links_do_nothing(client: TestClient, engine: sa.Engine, brand: Brand) -> None:
    before = snapshot(engine)
    for method, path, case in _tampered(brand):
        response = client.request(method.upper(), path, follow_redirects=False)
        assert response.status_code == 404, case
        assert "location" not in response.headers, case
    assert snapshot(engine) == before


def test_a_token_signed_with_another_secret_is_refused(
    client: TestClient, engine: sa.Engine, brand: Brand, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LIFELOOP_SECRET_KEY", "another-deployment-with-its-own-secret-key-000")
    path = links(brand)["open"]
    monkeypatch.setenv("LIFELOOP_SECRET_KEY", "test-secret-key-for-channel-credentials-0123456789")
    assert client.get(path).status_code == 404
