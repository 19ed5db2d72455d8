"""Console messaging pages: the template editor with its live preview, channels (credentials, webhook
URLs, a test send to a real local provider), and the contact policy form."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from html import unescape
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from lifeloop.accounts.service import audit_entries
from lifeloop.messaging.channels.config import load_config
from lifeloop.messaging.delivery_worker import Adapters
from lifeloop.profiles.resolver import resolve_pending
from lifeloop.store.engine import connect
from tests.conftest import TEST_SECRET_KEY, Brand, make_brand
from tests.fakes.webhook_server import FakeWebhookServer
from tests.messaging.helpers import drain
from tests.web.console.conftest import Console


@pytest.fixture(autouse=True)
def secret_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """Channel credentials are encrypted with the deployment's key."""
    monkeypatch.setenv("LIFELOOP_SECRET_KEY", TEST_SECRET_KEY)


def customer(client: TestClient, engine: sa.Engine, brand: Brand, user_id: str = "mei", **traits: Any) -> int:
    """A customer made as a brand makes one: an identify through /v1/batch, then identity resolution."""
    traits = traits or {"first_name": "美玲", "locale": "zh-TW"}
    answer = client.post(
        "/v1/batch",
        json={"batch": [{"type": "identify", "userId": user_id, "traits": traits}]},
        auth=brand.auth,
    )
    assert answer.status_code == 200, answer.text
    resolve_pending(engine)
    found = client.get(
        "/api/v1/profiles/lookup", params={"identity": f"user_id:{user_id}"}, headers=brand.bearer
    )
    return int(found.json()["id"])


def actions(engine: sa.Engine, brand: Brand) -> list[tuple[str, str]]:
    with connect(engine) as conn:
        return [(e.action, e.target) for e in audit_entries(conn, brand.workspace_id, limit=100)]


GREETING = {
    "f:zh-TW:text": "{{ traits.first_name }} 您好！",
    "f:zh-CN:text": "",
    "f:en:text": "Hi {{ traits.first_name }}",
}


# --- templates ---------------------------------------------------------------------------------------


def test_a_template_made_in_the_console_is_the_one_the_api_serves(
    console: Console, client: TestClient, engine: sa.Engine, brand: Brand
) -> None:
    assert "No message templates yet." in console.get("/templates").text
    form = console.get("/templates/new?channel=email")
    assert (
        form.status_code == 200 and 'name="f:zh-TW:subject"' in form.text and 'name="f:en:html"' in form.text
    )

    made = console.post(
        "/templates/new", {"key": "welcome", "channel": "line", "default_locale": "zh-TW", **GREETING},
        follow_redirects=False,
    )  # fmt: skip
    assert made.status_code == 303 and made.headers["location"] == "/templates/welcome?saved=1"
    api = client.get("/api/v1/templates/welcome", headers=brand.bearer).json()
    assert api["channel"] == "line" and api["version"] == 1 and api["default_locale"] == "zh-TW"
    assert api["variants"] == {
        "zh-TW": {"text": "{{ traits.first_name }} 您好！"},
        "en": {"text": "Hi {{ traits.first_name }}"},
    }

    page = console.get("/templates/welcome?saved=1")
    assert "Template saved." in page.text and "{{ traits.first_name }} 您好！" in page.text
    listed = console.get("/templates").text
    assert 'href="/templates/welcome"' in listed and ">zh-TW<" in listed

    # An edit (with the version it was made on) is version 2; adding a locale through the extra box.
    edited = console.post(
        "/templates/welcome",
        {"version": "1", "default_locale": "zh-TW", **GREETING, "f:en:text": "Hello {{ traits.first_name }}",
         "extra_locale": "ja", "x:text": "{{ traits.first_name }}さん"},
        follow_redirects=False,
    )  # fmt: skip
    assert edited.status_code == 303
    api = client.get("/api/v1/templates/welcome", headers=brand.bearer).json()
    assert api["version"] == 2 and api["variants"]["en"] == {"text": "Hello {{ traits.first_name }}"}
    assert api["variants"]["ja"] == {"text": "{{ traits.first_name }}さん"}

    # A stale edit (someone saved version 2 meanwhile) is a 409 shown in the form; nothing changes.
    stale = console.post("/templates/welcome", {"version": "1", "default_locale": "zh-TW", **GREETING})
    assert stale.status_code == 409 and "is at version 2, not 1" in stale.text
    assert client.get("/api/v1/templates/welcome", headers=brand.bearer).json()["version"] == 2
    assert ("template.create", "welcome") in actions(engine, brand)
    assert ("template.update", "welcome") in actions(engine, brand)


def test_the_live_preview_renders_a_real_customer_with_the_apis_renderer(
    console: Console, client: TestClient, engine: sa.Engine, brand: Brand
) -> None:
    pid = customer(client, engine, brand)
    draft = {"channel": "line", "default_locale": "en", **GREETING}
    by_id = console.htmx("POST", "/templates/_preview", data={**draft, "customer": str(pid)})
    assert by_id.status_code == 200, by_id.text
    assert "美玲 您好！" in by_id.text and "in zh-TW" in by_id.text  # the customer's locale trait chose zh-TW
    by_identity = console.htmx(
        "POST", "/templates/_preview", data={**draft, "customer": "user_id:mei", "preview_locale": "en"}
    )
    assert "Hi 美玲" in by_identity.text
    with_event = console.htmx(
        "POST", "/templates/_preview",
        data={"channel": "line", "default_locale": "en", "f:en:text": "Order {{ event.order_id }}",
              "customer": str(pid), "preview_locale": "en", "event": '{"order_id": "A-1001"}'},
    )  # fmt: skip
    assert "Order A-1001" in with_event.text

    # The same template saved, previewed through the REST API: the same text.
    client.post(
        "/api/v1/templates", headers=brand.bearer,
        json={"key": "hi", "channel": "line", "default_locale": "en",
              "variants": {"zh-TW": {"text": GREETING["f:zh-TW:text"]},
                           "en": {"text": GREETING["f:en:text"]}}},
    )  # fmt: skip
    rest = client.post("/api/v1/templates/hi/preview", json={"profile_id": pid}, headers=brand.bearer).json()
    assert rest["content"]["text"] == "美玲 您好！"

    nobody = console.htmx("POST", "/templates/_preview", data={**draft, "customer": "user_id:nobody"})
    assert nobody.status_code == 404 and "no profile with user_id 'nobody'" in unescape(nobody.text)
    empty = console.htmx("POST", "/templates/_preview", data=draft)
    assert empty.status_code == 200 and "Choose a customer" in empty.text


def test_liquid_errors_are_shown_inline_with_their_line_and_save_nothing(
    console: Console, client: TestClient, engine: sa.Engine, brand: Brand
) -> None:
    pid = customer(client, engine, brand)
    broken = {"f:zh-TW:text": "您好\n{{ traits.first_name }", "f:en:text": "Hi"}
    saved = console.post(
        "/templates/new", {"key": "broken", "channel": "line", "default_locale": "en", **broken}
    )
    assert saved.status_code == 400
    assert "Liquid syntax error in zh-TW.text: expected '}}', found end of file (line 2)" in unescape(
        saved.text
    )
    assert 'id="v-zh-TW-text-error"' in saved.text and 'aria-invalid="true"' in saved.text
    assert "您好\n{{ traits.first_name }</textarea>" in saved.text  # what was typed is kept
    assert client.get("/api/v1/templates/broken", headers=brand.bearer).status_code == 404

    preview = console.htmx(
        "POST",
        "/templates/_preview",
        data={"channel": "line", "default_locale": "en", "customer": str(pid), **broken},
    )
    assert preview.status_code == 400
    assert "Liquid syntax error in zh-TW.text" in preview.text and "line 2" in preview.text
    undefined = console.htmx(
        "POST", "/templates/_preview",
        data={"channel": "line", "default_locale": "en", "customer": str(pid),
              "f:zh-TW:text": "a\nb\n{{ traits.nope }}"},
    )  # fmt: skip
    assert undefined.status_code == 400
    assert "traits.nope is undefined" in undefined.text and "line 3" in undefined.text


# --- channels ----------------------------------------------------------------------------------------

LINE_SECRETS = {
    "c:channel_access_token": "line-token-SECRET-1234",
    "c:channel_secret": "line-secret-SECRET-5678",
}


def test_an_admin_connects_line_and_the_secrets_never_come_back(
    console: Console, client: TestClient, engine: sa.Engine, brand: Brand
) -> None:
    before = console.get("/channels")
    assert before.status_code == 200 and "not connected" in before.text
    assert "http://testserver/webhooks/line/acme" in before.text  # to paste into the LINE console
    assert "http://testserver/webhooks/wecom/acme" in before.text

    saved = console.post(
        "/channels/line",
        {"name": "default", "settings": '{"welcome_template": "welcome"}', "enabled": "on", **LINE_SECRETS},
    )
    assert saved.status_code == 200 and "Channel line (default) saved." in saved.text
    for text in (saved.text, console.get("/channels").text):
        assert "SECRET" not in text
        assert "channel_access_token" in text and "welcome_template" in text
    api = client.get("/api/v1/channels", headers=brand.bearer).json()
    assert [(c["channel"], c["name"], c["credential_fields"], c["enabled"]) for c in api] == [
        ("line", "default", ["channel_access_token", "channel_secret"], True)
    ]

    # Saving again with the secret inputs left empty changes the settings and keeps the secrets.
    again = console.post("/channels/line", {"name": "default", "settings": "{}", "enabled": "on"})
    assert again.status_code == 200
    with connect(engine) as conn:
        config, secrets = load_config(conn, brand.workspace_id, "line")
    assert config.settings == {} and secrets == {
        "channel_access_token": "line-token-SECRET-1234", "channel_secret": "line-secret-SECRET-5678"
    }  # fmt: skip

    bad = console.post("/channels/line", {"name": "default", "settings": "{not json", **LINE_SECRETS})
    assert bad.status_code == 400 and "settings are not valid JSON" in bad.text and "SECRET" not in bad.text
    assert ("channel.save", "line/default") in actions(engine, brand)


def test_an_operator_sees_channels_read_only_and_may_pause_them(
    console_as: Callable[..., Console], client: TestClient, engine: sa.Engine, brand: Brand
) -> None:
    admin = console_as("admin")
    admin.post("/channels/line", {"name": "default", "settings": "{}", "enabled": "on", **LINE_SECRETS})
    operator = console_as("operator")
    page = operator.get("/channels")
    assert 'id="credentials-line"' not in page.text and "Only an admin can change" in page.text
    refused = operator.post("/channels/line", {"name": "default", "settings": "{}", **LINE_SECRETS})
    assert refused.status_code == 403
    paused = operator.post("/channels/line/default/enabled", {"enabled": "false"})
    assert paused.status_code == 200 and "Channel paused." in paused.text
    assert client.get("/api/v1/channels/line/default", headers=brand.bearer).json()["enabled"] is False
    assert operator.post("/channels/line/nothing/enabled", {"enabled": "true"}).status_code == 404


@pytest.fixture
def provider() -> Iterator[FakeWebhookServer]:
    with FakeWebhookServer("whsec_console") as server:
        yield server


def test_a_test_send_reaches_the_provider(
    console_as: Callable[..., Console], client: TestClient, engine: sa.Engine, brand: Brand,
    provider: FakeWebhookServer,
) -> None:  # fmt: skip
    admin = console_as("admin")
    settings = json.dumps({"url": provider.url})
    assert (
        admin.post(
            "/channels/webhook", {"settings": settings, "enabled": "on", "c:secret": "whsec_console"}
        ).status_code
        == 200
    )
    operator = console_as("operator")
    assert 'id="test-send"' in operator.get("/channels").text
    sent = operator.post(
        "/channels/test", {"channel": "webhook", "recipient": provider.url, "text": "hello from the console"}
    )
    assert sent.status_code == 200 and "Test message queued as delivery" in sent.text
    delivery = client.get("/api/v1/deliveries", headers=brand.bearer).json()["items"][0]
    assert delivery["template"] == "test" and delivery["transactional"] is True

    adapters = Adapters(engine)  # built from the channel configuration the admin saved, its secret signs
    try:
        drain(engine, adapters)
    finally:
        adapters.close()
    assert [r.body["content"] for r in provider.received if r.status < 300] == [
        {"text": "hello from the console"}
    ]  # type: ignore[index]
    status = operator.htmx("GET", f"/channels/test/{delivery['id']}")
    assert status.status_code == 200 and ">delivered<" in status.text and "hx-get" not in status.text
    assert (
        client.get(f"/api/v1/deliveries/{delivery['id']}", headers=brand.bearer).json()["status"]
        == "delivered"
    )
    assert ("message.test", "webhook") in actions(engine, brand)

    neither = operator.post("/channels/test", {"channel": "webhook", "text": "hi"})
    assert neither.status_code == 400 and "give either an address or a customer" in neither.text


# --- contact policy ----------------------------------------------------------------------------------


def policy_form(**changes: Any) -> dict[str, Any]:
    """The policy form as the page shows the defaults, with ``changes``."""
    form: dict[str, Any] = {
        "cap_tier": ["regular", "high_value", "sleeping", "lost", ""],
        "cap_limit": ["3", "5", "2", "2", ""],
        "cap_days": ["7", "7", "30", "30", ""],
        "over_cap": "suppress",
        "quiet_hours_start": "23:00",
        "quiet_hours_end": "08:00",
        "quiet_hours_jitter_minutes": "10",
        "min_events_for_best_hour": "5",
        "best_windows_weekday": "12:00-13:30, 19:00-21:00",
        "best_windows_weekend": "10:00-11:00, 15:00-17:00, 20:00-22:00",
        "fallback:line": "sms", "fallback:wecom": "sms", "fallback:wechat": "sms",
        "low_tier": ["lost", ""], "low_channels": ["sms, wechat", ""],
        "max_attempts": "8", "retry_base_seconds": "2.0", "retry_max_seconds": "3600.0",
    }  # fmt: skip
    rates = {"line": (1000, 1000), "wecom": (20, 20), "wechat": (50, 50), "email": (20, 50), "sms": (20, 20),
             "webhook": (200, 200)}  # fmt: skip
    for channel, (rate, burst) in rates.items():
        form[f"rate:{channel}:per_second"], form[f"rate:{channel}:burst"] = str(rate), str(burst)
    return {**form, **changes}


def test_the_contact_policy_form_saves_through_update_policy(
    console: Console, client: TestClient, engine: sa.Engine, brand: Brand
) -> None:
    shown = console.get("/policy")
    assert (
        shown.status_code == 200
        and 'value="23:00"' in shown.text
        and 'value="12:00-13:30, 19:00-21:00"' in shown.text
    )
    changed = policy_form(
        cap_tier=["regular", "high_value", "sleeping", "lost", "vip_plus"],
        cap_limit=["4", "5", "2", "2", "9"],
        cap_days=["7", "7", "30", "30", "14"], quiet_hours_start="22:00", quiet_hours_end="09:00",
        best_windows_weekday="11:00-12:00", send_time_optimization="on", **{"fallback:line": "sms, email"},
        **{"rate:line:per_second": "500", "rate:line:burst": "600"},
    )  # fmt: skip
    saved = console.post("/policy", changed)
    assert saved.status_code == 200 and "Contact policy saved." in saved.text
    api = client.get("/api/v1/contact-policy", headers=brand.bearer).json()
    assert api["caps"]["regular"] == {"limit": 4, "days": 7} and api["caps"]["vip_plus"] == {
        "limit": 9,
        "days": 14,
    }
    assert (api["quiet_hours_start"], api["quiet_hours_end"]) == ("22:00:00", "09:00:00")
    assert api["best_windows_weekday"] == [{"start": "11:00:00", "end": "12:00:00"}]
    assert api["fallback"]["line"] == ["sms", "email"] and api["send_time_optimization"] is True
    assert api["rate_limits"]["line"] == {"per_second": 500.0, "burst": 600}
    assert 'value="sms, email"' in console.get("/policy").text
    assert ("policy.update", "contact-policy") in actions(engine, brand)

    for bad, message in (
        (
            {"quiet_hours_jitter_minutes": "500"},
            "quiet_hours_jitter_minutes: Input should be less than or equal to 120",
        ),
        ({"best_windows_weekday": "12:00"}, "best_windows_weekday: '12:00' is not a window"),
        ({"fallback:line": "sms, fax"}, "unknown channel 'fax'"),
        (
            {"cap_tier": ["high_value", ""], "cap_limit": ["5", ""], "cap_days": ["7", ""]},
            "caps must include",
        ),
    ):
        refused = console.post("/policy", policy_form(**bad))
        assert refused.status_code == 400 and message in unescape(refused.text), (bad, refused.text[-3000:])
        assert 'role="alert"' in refused.text
    assert client.get("/api/v1/contact-policy", headers=brand.bearer).json() == api  # nothing changed


def test_a_viewer_reads_every_page_and_may_write_nothing(
    console_as: Callable[..., Console], client: TestClient, engine: sa.Engine, brand: Brand
) -> None:
    admin = console_as("admin")
    admin.post("/templates/new", {"key": "welcome", "channel": "line", "default_locale": "zh-TW", **GREETING})
    admin.post("/channels/line", {"name": "default", "settings": "{}", "enabled": "on", **LINE_SECRETS})
    viewer = console_as("viewer", locale="zh-TW")
    listed = viewer.get("/templates")
    assert listed.status_code == 200 and "welcome" in listed.text and 'id="new-template"' not in listed.text
    one = viewer.get("/templates/welcome")
    assert one.status_code == 200 and "readonly" in one.text and 'id="save-template"' not in one.text
    assert "即時預覽" in one.text  # in the viewer's language
    channels = viewer.get("/channels").text
    assert (
        'id="test-send"' not in channels
        and 'id="credentials-line"' not in channels
        and "SECRET" not in channels
    )
    assert 'id="save-policy"' not in viewer.get("/policy").text

    assert viewer.get("/templates/new").status_code == 403
    writes = [
        ("/templates/new", {"key": "x", "channel": "line", "default_locale": "en", "f:en:text": "x"}),
        ("/templates/welcome", {"version": "1", "default_locale": "zh-TW", **GREETING}),
        ("/channels/line", {"name": "default", "settings": "{}", **LINE_SECRETS}),
        ("/channels/line/default/enabled", {"enabled": "false"}),
        ("/channels/test", {"channel": "line", "recipient": "U1", "text": "hi"}),
        ("/policy", policy_form(quiet_hours_start="21:00")),
    ]
    for path, data in writes:
        assert viewer.post(path, data).status_code == 403, path
    operator = console_as("operator")
    assert (
        operator.post("/policy", policy_form(quiet_hours_start="21:00")).status_code == 403
    )  # admin, as the API
    assert client.get("/api/v1/templates/welcome", headers=brand.bearer).json()["version"] == 1
    assert client.get("/api/v1/channels/line/default", headers=brand.bearer).json()["enabled"] is True
    assert (
        client.get("/api/v1/contact-policy", headers=brand.bearer).json()["quiet_hours_start"] == "23:00:00"
    )


def test_another_workspaces_template_and_delivery_are_not_found(
    console: Console, client: TestClient, engine: sa.Engine, brand: Brand
) -> None:
    other = make_brand(engine, "other")
    made = client.post(
        "/api/v1/templates", headers=other.bearer,
        json={"key": "their-offer", "channel": "sms", "variants": {"en": {"text": "50% off"}}},
    )  # fmt: skip
    assert made.status_code == 201
    sent = client.post(
        "/api/v1/messages/test", headers=other.bearer,
        json={"channel": "webhook", "recipient": "http://127.0.0.1:9/hook", "content": {"text": "x"}},
    )  # fmt: skip
    assert console.get("/templates/their-offer").status_code == 404
    assert (
        console.post("/templates/their-offer", {"version": "1", "f:en:text": "mine now"}).status_code == 404
    )
    assert "their-offer" not in console.get("/templates").text
    assert console.htmx("GET", f"/channels/test/{sent.json()['id']}").status_code == 404
    assert client.get("/api/v1/templates/their-offer", headers=other.bearer).json()["variants"] == {
        "en": {"text": "50% off"}
    }
