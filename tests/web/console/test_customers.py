"""Customers: search by identity, trait, tag and stage; one customer's page; manual tags and consent."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from fastapi.testclient import TestClient

from lifeloop.accounts.service import audit_entries
from lifeloop.messaging.delivery_worker import Adapters
from lifeloop.profiles.resolver import resolve_pending
from lifeloop.profiles.service import find_by_identity
from lifeloop.store.engine import connect
from tests.conftest import Brand, make_brand
from tests.fakes.webhook_server import FakeWebhookServer
from tests.messaging.helpers import SECRET, drain
from tests.web.console.conftest import Console


def _ingest(
    client: TestClient, engine: sa.Engine, auth: tuple[str, str], batch: list[dict[str, Any]]
) -> None:
    answer = client.post("/v1/batch", json={"batch": batch}, auth=auth)
    assert answer.status_code == 200, answer.text
    resolve_pending(engine)


def _pid(engine: sa.Engine, workspace_id: int, kind: str, value: str) -> int:
    with connect(engine) as conn:
        return find_by_identity(conn, workspace_id, kind, value)


def _at(minutes_ago: int) -> str:
    return (datetime.now(UTC) - timedelta(minutes=minutes_ago)).isoformat()


def _customers(client: TestClient, engine: sa.Engine, brand: Brand) -> dict[str, int]:
    """Three customers through ingest, after the LINE lifecycle model is installed: Mei (a LINE friend
    in Taipei who ordered, so ``loyal``), Wei (Kaohsiung, only followed: ``new``) and Lin (no stage)."""
    model = client.post("/api/v1/lifecycle/models", json={"preset": "line"}, headers=brand.bearer)
    assert model.status_code == 201, model.text
    line = {"externalIds": [{"id": "U4af4980629", "type": "line_user_id"}]}
    _ingest(
        client,
        engine,
        brand.auth,
        [
            {
                "type": "identify",
                "userId": "mei",
                "timestamp": _at(30),
                "context": line,
                "traits": {"name": "Chen Mei", "email": "mei@example.com", "city": "Taipei", "visits": 3},
            },
            {
                "type": "track",
                "userId": "mei",
                "event": "Order Completed",
                "timestamp": _at(20),
                "properties": {"revenue": 1200, "order_id": "A-77"},
            },
            {
                "type": "identify",
                "userId": "wei",
                "timestamp": _at(30),
                "traits": {"name": "Wang Wei", "email": "wei@example.com", "city": "Kaohsiung"},
            },
            {"type": "track", "userId": "wei", "event": "Channel Followed", "timestamp": _at(25)},
            {
                "type": "identify",
                "userId": "lin",
                "timestamp": _at(30),
                "traits": {"name": "Lin Yu", "phone": "+886 912 345 678"},
            },
        ],
    )
    return {who: _pid(engine, brand.workspace_id, "user_id", who) for who in ("mei", "wei", "lin")}


def _listed(html: str) -> set[int]:
    """The profile ids the result table links to."""
    return {int(found) for found in re.findall(r'href="/customers/(\d+)"', html)}


def test_search_finds_customers_by_identity_trait_tag_and_stage(
    client: TestClient, engine: sa.Engine, brand: Brand, console: Console
) -> None:
    ids = _customers(client, engine, brand)
    mei, wei, lin = ids["mei"], ids["wei"], ids["lin"]
    tagged = client.post(f"/api/v1/tags/profiles/{wei}", json={"tag": "vip-candidate"}, headers=brand.bearer)
    assert tagged.status_code == 201, tagged.text

    everyone = console.get("/customers")
    assert everyone.status_code == 200 and _listed(everyone.text) == {mei, wei, lin}
    assert (
        "Chen Mei" in everyone.text and "mei@example.com" in everyone.text and "U4af4980629" in everyone.text
    )
    searches: list[tuple[dict[str, str], set[int]]] = [
        ({"q": "MEI@example.com"}, {mei}),  # an identity, however it is cased
        ({"q": "U4af4980629"}, {mei}),  # a LINE user id
        ({"q": "line_user_id:U4af4980629"}, {mei}),
        ({"q": "+886912345678"}, {lin}),  # a phone identity
        ({"q": "Wang"}, {wei}),  # part of a name
        ({"q": "wang"}, {wei}),
        ({"q": "example.com"}, {mei, wei}),  # part of an e-mail
        ({"trait": "city=Taipei"}, {mei}),
        ({"trait": "visits=3"}, {mei}),  # a number trait
        ({"trait": "city"}, {mei, wei}),  # has the trait
        ({"tag": "vip-candidate"}, {wei}),
        ({"stage": "loyal"}, {mei}),
        ({"stage": "new"}, {wei}),
        ({"q": "example.com", "stage": "new"}, {wei}),
        ({"q": "U4af4980629", "stage": "new"}, set()),
    ]
    for params, expected in searches:
        answer = console.get("/customers", params=params)
        assert answer.status_code == 200, (params, answer.text)
        assert _listed(answer.text) == expected, params
    nobody = console.get("/customers", params={"q": "nobody-at-all"})
    assert 'id="no-results"' in nobody.text

    live = console.htmx("GET", "/customers/results", params={"q": "Wang"})
    assert live.status_code == 200 and "<html" not in live.text and _listed(live.text) == {wei}
    assert live.headers["HX-Push-Url"] == "/customers?q=Wang"
    bad = console.get("/customers", params={"trait": ".=x"})
    assert bad.status_code == 400 and 'id="search-error"' in bad.text
    stage_names = console.get("/customers").text
    assert "Loyal repeat buyer" in stage_names  # the stage shown and offered by its name


def test_search_pages_through_many_customers(
    client: TestClient, engine: sa.Engine, brand: Brand, console: Console
) -> None:
    _ingest(
        client,
        engine,
        brand.auth,
        [
            {
                "type": "identify",
                "userId": f"u{i:02d}",
                "traits": {"name": f"Guest {i:02d}", "team": "blue"},
                "timestamp": _at(5),
            }
            for i in range(30)
        ],
    )
    first = console.get("/customers", params={"trait": "team=blue"})
    assert "30 customers match." in first.text and len(_listed(first.text)) == 25
    link = re.search(r'href="(/customers\?[^"]*after=\d+)"', first.text)
    assert link
    second = console.get(link[1].replace("&amp;", "&"))
    assert len(_listed(second.text)) == 5 and not _listed(second.text) & _listed(first.text)
    assert 'id="next-page"' not in second.text


def test_the_customer_page_shows_who_they_are_and_what_happened(
    client: TestClient, engine: sa.Engine, brand: Brand, console: Console
) -> None:
    mei = _customers(client, engine, brand)["mei"]
    consent = client.put(
        f"/api/v1/profiles/{mei}/consent/email",
        json={"status": "unsubscribed", "source": "form"},
        headers=brand.bearer,
    )
    assert consent.status_code == 200
    with FakeWebhookServer(SECRET) as webhook:
        body = {
            "channel": "webhook",
            "profile_id": mei,
            "recipient": webhook.url,
            "content": {"text": "滿額禮"},
        }
        sent = client.post("/api/v1/messages/test", json=body, headers=brand.bearer)
        assert sent.status_code == 202, sent.text
        adapters = Adapters(engine, webhook_secret=SECRET)
        try:
            drain(engine, adapters)
        finally:
            adapters.close()
        assert len(webhook.accepted) == 1

    answer = console.get(f"/customers/{mei}")
    assert answer.status_code == 200, answer.text
    html = answer.text
    traits = html.split('id="traits"')[1].split("</table>")[0]
    assert "Taipei" in traits and "Chen Mei" in traits and "<code>visits</code>" in traits
    identities = html.split('id="identities"')[1].split("</table>")[0]
    assert "LINE user ID" in identities and "U4af4980629" in identities and "mei@example.com" in identities
    assert "Loyal repeat buyer" in html.split('id="stage"')[1].split("</div>")[0]
    assert "Loyal repeat buyer" in html.split('id="stage-history"')[1]
    assert "an event" in html.split('id="stage-history"')[1].split("</table>")[0]  # why, in words
    events = html.split('id="events"')[1].split("</ul>")[0]
    assert "Order Completed" in events and "A-77" in events
    assert events.index("Order Completed") < events.index("identify")  # newest first
    messages = html.split('id="messages"')[1].split("</table>")[0]
    assert "滿額禮" in messages and "delivered" in messages
    consents = html.split('id="consent"')[1].split("</table>")[0]
    assert "unsubscribed" in consents and "form" in consents
    assert "GMT+8" in html or "+08:00" in html or "Taipei" in html  # times in the workspace zone


def test_the_timeline_pages_with_a_cursor(
    client: TestClient, engine: sa.Engine, brand: Brand, console: Console
) -> None:
    _ingest(
        client,
        engine,
        brand.auth,
        [
            {"type": "track", "userId": "busy", "event": f"Step {i:02d}", "timestamp": _at(100 - i)}
            for i in range(30)
        ],
    )
    pid = _pid(engine, brand.workspace_id, "user_id", "busy")
    first = console.get(f"/customers/{pid}")
    assert "Step 29" in first.text and "Step 04" not in first.text
    more = re.search(r'hx-get="(/customers/\d+/events\?cursor=[^"]+)"', first.text)
    assert more, first.text
    rest = console.htmx("GET", more[1])
    assert rest.status_code == 200 and "Step 04" in rest.text and "Step 29" not in rest.text
    assert "<html" not in rest.text and "more-events" not in rest.text
    whole = re.search(r'href="(/customers/\d+\?cursor=[^"#]+)#events"', first.text)
    assert whole and "Step 00" in console.get(whole[1]).text


def test_an_operator_adds_and_removes_a_manual_tag(
    client: TestClient, engine: sa.Engine, brand: Brand, console_as: Callable[..., Console]
) -> None:
    mei = _customers(client, engine, brand)["mei"]
    operator = console_as("operator")
    assert 'id="add-tag"' in operator.get(f"/customers/{mei}").text
    added = operator.post(f"/customers/{mei}/tags", {"tag": "birthday-club"}, follow_redirects=False)
    assert added.status_code == 303 and added.headers["location"] == f"/customers/{mei}"
    assert "birthday-club" in operator.get(f"/customers/{mei}").text.split('id="tag-list"')[1]
    tags = client.get(f"/api/v1/tags/profiles/{mei}", headers=brand.bearer).json()
    assert [(t["tag"], t["kind"]) for t in tags] == [("birthday-club", "manual")]

    refused = operator.post(f"/customers/{mei}/tags", {"tag": "x" * 200})
    assert refused.status_code == 400 and 'class="flash error"' in refused.text and "1-128" in refused.text
    assert len(client.get(f"/api/v1/tags/profiles/{mei}", headers=brand.bearer).json()) == 1
    missing = operator.post(f"/customers/{mei}/tags/remove", {"tag": "never-had-it"})
    assert missing.status_code == 404

    removed = operator.post(f"/customers/{mei}/tags/remove", {"tag": "birthday-club"})
    assert removed.status_code == 200 and 'id="no-tags"' in removed.text
    assert client.get(f"/api/v1/tags/profiles/{mei}", headers=brand.bearer).json() == []
    with connect(engine) as conn:
        audit = audit_entries(conn, brand.workspace_id)
    assert [(e.action, e.target, e.user_email) for e in audit[:2]] == [
        ("tag.remove", f"profile:{mei} birthday-club", f"operator-{brand.workspace_id}@example.com"),
        ("tag.add", f"profile:{mei} birthday-club", f"operator-{brand.workspace_id}@example.com"),
    ]


def test_an_operator_changes_consent(
    client: TestClient, engine: sa.Engine, brand: Brand, console_as: Callable[..., Console]
) -> None:
    wei = _customers(client, engine, brand)["wei"]
    operator = console_as("operator")
    changed = operator.post(f"/customers/{wei}/consent", {"channel": "line", "status": "unsubscribed"})
    assert changed.status_code == 200
    consents = client.get(f"/api/v1/profiles/{wei}/consent", headers=brand.bearer).json()
    assert [(c["channel"], c["status"], c["source"]) for c in consents] == [
        ("line", "unsubscribed", "console")
    ]
    bad = operator.post(f"/customers/{wei}/consent", {"channel": "pigeon", "status": "subscribed"})
    assert bad.status_code == 400 and "channel must be one of" in bad.text
    with connect(engine) as conn:
        audit = audit_entries(conn, brand.workspace_id)
    assert (audit[0].action, audit[0].detail["status"]) == ("consent.set", "unsubscribed")


def test_a_viewer_reads_but_cannot_tag_or_change_consent(
    client: TestClient, engine: sa.Engine, brand: Brand, console_as: Callable[..., Console]
) -> None:
    mei = _customers(client, engine, brand)["mei"]
    viewer = console_as("viewer")
    page = viewer.get(f"/customers/{mei}")
    assert page.status_code == 200 and "Chen Mei" in page.text
    assert 'id="add-tag"' not in page.text and 'id="set-consent"' not in page.text
    assert viewer.post(f"/customers/{mei}/tags", {"tag": "sneaky"}).status_code == 403
    assert viewer.post(f"/customers/{mei}/tags/remove", {"tag": "sneaky"}).status_code == 403
    assert (
        viewer.post(f"/customers/{mei}/consent", {"channel": "line", "status": "unsubscribed"}).status_code
        == 403
    )
    assert client.get(f"/api/v1/tags/profiles/{mei}", headers=brand.bearer).json() == []
    assert client.get(f"/api/v1/profiles/{mei}/consent", headers=brand.bearer).json() == []


def test_another_workspaces_customer_is_not_found_and_a_merged_one_leads_to_the_survivor(
    client: TestClient, engine: sa.Engine, brand: Brand, console: Console
) -> None:
    other = make_brand(engine, "other")
    _ingest(
        client,
        engine,
        other.auth,
        [{"type": "identify", "userId": "stranger", "traits": {"name": "Outsider"}}],
    )
    theirs = _pid(engine, other.workspace_id, "user_id", "stranger")
    assert console.get(f"/customers/{theirs}").status_code == 404
    assert console.get(f"/customers/{theirs}/events").status_code == 404
    assert console.post(f"/customers/{theirs}/tags", {"tag": "x"}).status_code == 404
    assert "Outsider" not in console.get("/customers", params={"q": "stranger"}).text

    _ingest(
        client,
        engine,
        brand.auth,
        [
            {"type": "identify", "userId": "ann", "traits": {"name": "Ann"}, "timestamp": _at(10)},
            {"type": "track", "anonymousId": "device-9", "event": "Page Viewed", "timestamp": _at(9)},
        ],
    )
    anonymous = _pid(engine, brand.workspace_id, "anonymous_id", "device-9")
    ann = _pid(engine, brand.workspace_id, "user_id", "ann")
    assert anonymous != ann
    _ingest(
        client,
        engine,
        brand.auth,
        [
            {
                "type": "track",
                "userId": "ann",
                "anonymousId": "device-9",
                "event": "Signed In",
                "timestamp": _at(8),
            }
        ],
    )
    followed = console.get(f"/customers/{anonymous}", follow_redirects=False)
    assert followed.status_code == 303 and followed.headers["location"] == f"/customers/{ann}"
    survivor = console.get(f"/customers/{anonymous}")
    assert "Ann" in survivor.text and f"#{anonymous}" in survivor.text.split('id="merged-from"')[1]


def test_the_customer_pages_speak_traditional_chinese(
    client: TestClient, engine: sa.Engine, brand: Brand, console_as: Callable[..., Console]
) -> None:
    mei = _customers(client, engine, brand)["mei"]
    viewer = console_as("viewer", locale="zh-TW")
    search = viewer.get("/customers", params={"q": "Chen"})
    assert "尋找客戶" in search.text and "生命週期階段" in search.text and "最後上線" in search.text
    assert "1 位客戶符合。" in search.text and "Find a customer" not in search.text
    one = viewer.get(f"/customers/{mei}")
    for label in ("屬性", "身分", "同意狀態", "階段紀錄", "尚未傳送訊息給這位客戶。", "LINE 使用者 ID"):
        assert label in one.text, label
    assert "Stage history" not in one.text and "Traits" not in one.text
    assert "事件觸發" in one.text.split('id="stage-history"')[1].split("</table>")[0]
