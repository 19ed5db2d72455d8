"""Rendering console pages: one Jinja2 environment per locale with its translations installed, and the
filters every page uses (times in the workspace's zone, numbers and money in the reader's locale)."""

from __future__ import annotations

import json
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from babel.core import Locale
from babel.dates import format_datetime
from babel.numbers import format_currency, format_decimal, format_percent
from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from lifeloop.accounts.models import LOCALES, ConsoleSession
from lifeloop.web.console.auth import CSRF_FIELD, allowed
from lifeloop.web.console.i18n import LANGUAGE_NAMES, N_, babel_locale, negotiate, translations

TEMPLATE_DIR = Path(__file__).parent / "templates"
LANG_COOKIE = "lifeloop_lang"

# Console pages hold customers' personal data and forms that change things: never framed by another site
# (clickjacking), never kept in a shared cache, never leaking their URLs (with search terms) elsewhere.
PAGE_HEADERS = {
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
}

# The sidebar: path, label (a msgid), the permission a role needs to see it.
NAV: list[tuple[str, str, str]] = [
    ("/", N_("Overview"), "read"),
    ("/customers", N_("Customers"), "read"),
    ("/lifecycle", N_("Lifecycle"), "read"),
    ("/tags", N_("Tags"), "read"),
    ("/segments", N_("Segments"), "read"),
    ("/journeys", N_("Journeys"), "read"),
    ("/broadcasts", N_("Broadcasts"), "read"),
    ("/engagement", N_("Engagement"), "read"),
    ("/templates", N_("Templates"), "read"),
    ("/channels", N_("Channels"), "read"),
    ("/policy", N_("Contact policy"), "read"),
    ("/analytics", N_("Analytics"), "read"),
    ("/settings", N_("Settings"), "read"),
]


def _json_script(value: Any) -> Markup:
    """JSON safe inside ``<script type="application/json">`` (no ``</script>`` can close it early)."""
    text = json.dumps(value, ensure_ascii=False, default=str)
    return Markup(text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))


def _money(value: Any, currency: str, locale: Locale) -> str:
    """Cents only where they matter: an ARPU, not a month's revenue."""
    if value is None:
        return "–"
    amount = float(value)
    if abs(amount) >= 1000:
        return format_currency(amount, currency, locale=locale, format="¤#,##0", currency_digits=False)
    return format_currency(amount, currency, locale=locale)


@cache
def environment(locale: str) -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATE_DIR),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        extensions=["jinja2.ext.i18n"],
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.install_gettext_translations(translations(locale), newstyle=True)  # type: ignore[attr-defined]
    loc = babel_locale(locale)
    env.filters["number"] = lambda v, digits=0: (
        "–" if v is None else format_decimal(round(float(v), digits), locale=loc)
    )
    env.filters["percent"] = lambda v, digits=1: (
        "–" if v is None else format_percent(float(v), format="#,##0." + "0" * digits + "%", locale=loc)
    )
    env.filters["money"] = lambda v, currency="TWD": _money(v, currency, loc)
    env.filters["json_script"] = _json_script
    return env


def locale_of(request: Request, session: ConsoleSession | None) -> str:
    if session is not None:
        return session.user.locale
    chosen = request.cookies.get(LANG_COOKIE)
    return chosen if chosen in LOCALES else negotiate(request.headers.get("accept-language"))


def page(
    request: Request,
    session: ConsoleSession | None,
    template: str,
    *,
    status: int = 200,
    workspace: Any = None,
    **context: Any,
) -> HTMLResponse:
    """Render ``template`` for this reader: their language, their workspace's time zone, their role."""
    locale = locale_of(request, session)
    tz = ZoneInfo(workspace.timezone if workspace is not None else "UTC")
    loc = babel_locale(locale)

    def when(value: datetime | None, style: str = "medium") -> str:
        return "–" if value is None else format_datetime(value.astimezone(tz), style, locale=loc)

    html = (
        environment(locale)
        .get_template(template)
        .render(
            request=request,
            session=session,
            workspace=workspace,
            locale=locale,
            languages=LANGUAGE_NAMES,
            nav=[item for item in NAV if session is not None and allowed(session, item[2])],
            can=(lambda permission: session is not None and allowed(session, permission)),
            csrf_field=CSRF_FIELD,
            csrf_token=session.csrf_token if session is not None else "",
            when=when,
            path=request.url.path,
            **context,
        )
    )
    return HTMLResponse(html, status_code=status, headers=PAGE_HEADERS)
