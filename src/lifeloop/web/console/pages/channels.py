"""Channels: which are connected and enabled, the names of their stored credentials (never the values),
their settings, the webhook URLs to paste into LINE's and WeCom's consoles, and a test send.

Credentials are saved by admins only (as ``PUT /api/v1/channels/{channel}/{name}``); enabling and
pausing is an edit (as ``PATCH``); the test send queues a message as ``POST /api/v1/messages/test`` does,
and the delivery worker sends it.
"""

from __future__ import annotations

import json
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import Connection

from lifeloop.accounts.service import record_action
from lifeloop.errors import InvalidInput, LifeloopError
from lifeloop.messaging import service as messaging
from lifeloop.messaging.channels import config as channel_config
from lifeloop.messaging.channels.models import CHANNELS, ChannelConfig
from lifeloop.web.console.auth import Admin, Editor, Reader, Sender
from lifeloop.web.console.i18n import translations
from lifeloop.web.console.pages.data import fresh
from lifeloop.web.console.pages.templates_page import find_customer
from lifeloop.web.console.render import page
from lifeloop.web.deps import Conn, EngineDep
from lifeloop.workspaces.service import get_workspace

router = APIRouter(include_in_schema=False)

# Display names (msgids) and the credential fields each adapter reads (docs/channels.md).
CHANNEL_LABELS = {
    "line": "LINE Messaging API",
    "wecom": "WeCom customer contact",
    "wechat": "WeChat official account",
    "email": "E-mail (SMTP)",
    "sms": "SMS (HTTP provider)",
    "webhook": "Signed webhook",
}
CREDENTIAL_FIELDS: dict[str, tuple[str, ...]] = {
    "line": ("channel_access_token", "channel_secret"),
    "wecom": ("corp_id", "secret", "token", "encoding_aes_key"),
    "wechat": ("app_id", "app_secret"),
    "email": ("username", "password"),
    "sms": ("auth_header",),
    "webhook": ("secret",),
}
SETTINGS_EXAMPLES: dict[str, dict[str, Any]] = {
    "line": {"welcome_template": "welcome"},
    "wecom": {"sender": "zhangsan"},
    "wechat": {},
    "email": {
        "host": "smtp.example.com",
        "port": 587,
        "security": "starttls",
        "from_address": "news@brand.example",
    },
    "sms": {"url": "https://sms.provider.example/v1/send", "sender": "Brand"},
    "webhook": {"url": "https://example.com/hook"},
}
INBOUND = {"line": "line_webhook", "wecom": "wecom_verify"}  # route names in messaging/inbound/routes.py
FINAL = frozenset({"delivered", "dead", "suppressed"})


def webhook_url(request: Request, channel: str, slug: str, name: str) -> str:
    """The absolute inbound URL a provider calls, from this request's base URL."""
    url = str(request.url_for(INBOUND[channel], workspace_slug=slug))
    return url if name == "default" else f"{url}?name={name}"


def _panels(
    request: Request, configs: list[ChannelConfig], slug: str, forms: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    panels = []
    for channel in CHANNELS:
        mine = [c for c in configs if c.channel == channel]
        names = [c.name for c in mine] or ["default"]
        form = forms.get(channel, {})
        current = mine[0] if mine else None
        panels.append(
            {
                "channel": channel,
                "label": CHANNEL_LABELS[channel],
                "configs": mine,
                "fields": list(
                    dict.fromkeys(
                        [*CREDENTIAL_FIELDS[channel], *(current.credential_fields if current else [])]
                    )
                ),
                "set_fields": set(current.credential_fields) if current else set(),
                "webhook_urls": [(n, webhook_url(request, channel, slug, n)) for n in names]
                if channel in INBOUND
                else [],
                "form_name": form.get("name", current.name if current else "default"),
                "form_settings": form.get(
                    "settings",
                    json.dumps(
                        current.settings if current else SETTINGS_EXAMPLES[channel],
                        ensure_ascii=False,
                        indent=2,
                    ),
                ),
                "form_enabled": form.get("enabled", current.enabled if current else True),
                "error": form.get("error", ""),
            }
        )
    return panels


def _channels_page(
    request: Request,
    session: Reader,
    conn: Connection,
    *,
    flash: str = "",
    error: bool = False,
    status: int = 200,
    forms: dict[str, dict[str, Any]] | None = None,
    test: dict[str, Any] | None = None,
    sent: Any = None,
) -> HTMLResponse:
    fresh(conn)
    workspace = get_workspace(conn, session.workspace_id)
    configs = channel_config.list_configs(conn, session.workspace_id)
    return page(
        request,
        session,
        "msg_channels.html",
        status=status,
        workspace=workspace,
        panels=_panels(request, configs, workspace.slug, forms or {}),
        configured=sorted({c.channel for c in configs if c.enabled}),
        test=test or {},
        sent=sent,
        flash=flash,
        flash_kind="error" if error else "",
    )


@router.get("/channels", response_class=HTMLResponse)
def channels(request: Request, session: Reader, conn: Conn) -> HTMLResponse:
    return _channels_page(request, session, conn)


@router.post("/channels/test", response_class=HTMLResponse)
def send_test(
    request: Request,
    session: Sender,
    engine: EngineDep,
    conn: Conn,
    channel: Annotated[str, Form()],
    text: Annotated[str, Form()],
    recipient: Annotated[str, Form()] = "",
    customer: Annotated[str, Form()] = "",
    subject: Annotated[str, Form()] = "",
) -> Response:
    """Queue a test message (transactional, as the REST test send): the delivery worker sends it."""
    gettext = translations(session.user.locale).gettext
    test = {
        "channel": channel,
        "recipient": recipient,
        "customer": customer,
        "text": text,
        "subject": subject,
    }
    try:
        if not text.strip():
            raise InvalidInput("write the text of the test message", field="text")
        if bool(recipient.strip()) == bool(customer.strip()):
            raise InvalidInput("give either an address or a customer, not both", field="recipient")
        profile_id = find_customer(conn, session.workspace_id, customer) if customer.strip() else None
        content = {"text": text, **({"subject": subject} if subject.strip() else {})}
        with engine.begin() as tx:
            entry, _ = messaging.send_message(
                tx, session.workspace_id, channel=channel, content=content, profile_id=profile_id,
                recipient=recipient.strip() or None, template="test", transactional=True,
                optimize_send_time=False, idempotency_key=f"console-{uuid.uuid4()}",
            )  # fmt: skip
            detail = {"delivery_id": entry.id, "profile_id": profile_id}
            record_action(tx, session.workspace_id, user_id=session.user.id, action="message.test",
                          target=channel, detail=detail)  # fmt: skip
    except LifeloopError as failure:
        return _channels_page(
            request, session, conn, flash=failure.message, error=True, status=failure.status, test=test
        )
    flash = gettext("Test message queued as delivery %(id)s.") % {"id": entry.id}
    return _channels_page(request, session, conn, flash=flash, test=test, sent=entry)


@router.get("/channels/test/{delivery_id}", response_class=HTMLResponse)
def test_status(request: Request, delivery_id: int, session: Reader, conn: Conn) -> HTMLResponse:
    """The test message's status, polled by the page until the worker has settled it."""
    entry, _ = messaging.get_delivery(conn, session.workspace_id, delivery_id)
    return page(request, session, "msg_test_status.html", sent=entry, final=entry.status in FINAL)


@router.post("/channels/{channel}", response_class=HTMLResponse)
async def save_credentials(
    request: Request, channel: str, session: Admin, engine: EngineDep, conn: Conn
) -> Response:
    """Create or replace a channel's configuration; an empty credential input keeps its stored value."""
    form = await request.form()
    gettext = translations(session.user.locale).gettext
    name = str(form.get("name") or "default").strip()
    raw_settings = str(form.get("settings") or "").strip()
    enabled = form.get("enabled") == "on"
    credentials = {
        str(k)[2:]: str(v) for k, v in form.multi_items() if str(k).startswith("c:") and str(v).strip()
    }
    try:
        try:
            settings = json.loads(raw_settings) if raw_settings else {}
        except json.JSONDecodeError as error:
            raise InvalidInput(
                f"settings are not valid JSON: {error.msg} (line {error.lineno})", field="settings"
            ) from None
        with engine.begin() as tx:
            saved = channel_config.save_config_keeping_secrets(
                tx, session.workspace_id, channel=channel, name=name, credentials=credentials,
                settings=settings, enabled=enabled,
            )  # fmt: skip
            record_action(tx, session.workspace_id, user_id=session.user.id, action="channel.save",
                          target=f"{channel}/{name}",
                          detail={"credentials_changed": sorted(credentials), "settings": sorted(settings),
                                  "enabled": enabled})  # fmt: skip
    except LifeloopError as failure:
        kept = {"name": name, "settings": raw_settings, "enabled": enabled, "error": failure.message}
        return _channels_page(
            request, session, conn, flash=failure.message, error=True, status=failure.status,
            forms={channel: kept},
        )  # fmt: skip
    flash = gettext("Channel %(channel)s (%(name)s) saved.") % {"channel": saved.channel, "name": saved.name}
    return _channels_page(request, session, conn, flash=flash)


@router.post("/channels/{channel}/{name}/enabled", response_class=HTMLResponse)
def set_enabled(
    request: Request,
    channel: str,
    name: str,
    session: Editor,
    engine: EngineDep,
    conn: Conn,
    enabled: Annotated[str, Form()],
) -> Response:
    """Pause or resume a channel (as ``PATCH /api/v1/channels/{channel}/{name}``)."""
    gettext = translations(session.user.locale).gettext
    on = enabled == "true"
    try:
        with engine.begin() as tx:
            channel_config.set_enabled(tx, session.workspace_id, channel, name, enabled=on)
            action = "channel.enable" if on else "channel.disable"
            record_action(tx, session.workspace_id, user_id=session.user.id, action=action,
                          target=f"{channel}/{name}")  # fmt: skip
    except LifeloopError as failure:
        return _channels_page(
            request, session, conn, flash=failure.message, error=True, status=failure.status
        )
    return _channels_page(
        request, session, conn, flash=gettext("Channel enabled.") if on else gettext("Channel paused.")
    )
