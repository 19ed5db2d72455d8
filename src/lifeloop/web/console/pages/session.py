"""Signing in and out, and the reader's language."""

from __future__ import annotations

import hmac
import secrets
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from lifeloop.accounts.models import LOCALES
from lifeloop.accounts.service import (
    SESSION_LIFETIME,
    authenticate,
    close_session,
    open_session,
    record_action,
    set_preferences,
)
from lifeloop.errors import Forbidden, Unauthorized
from lifeloop.web.console.auth import COOKIE, Reader, mark_console
from lifeloop.web.console.i18n import translations
from lifeloop.web.console.render import LANG_COOKIE, locale_of, page
from lifeloop.web.deps import EngineDep

router = APIRouter(include_in_schema=False)
LOGIN_CSRF_COOKIE = "lifeloop_login"  # double-submit token: a foreign site cannot sign a browser in


def _safe_next(value: str | None) -> str:
    """Only a path on this site (no ``//host`` or scheme), so a login link cannot send users elsewhere."""
    if not value or not value.startswith("/") or value.startswith("//") or urlsplit(value).netloc:
        return "/"
    return value


def _login_page(
    request: Request, *, next_path: str, email: str = "", error: str = "", status: int = 200
) -> Response:
    token = request.cookies.get(LOGIN_CSRF_COOKIE) or secrets.token_urlsafe(24)
    response = page(
        request,
        None,
        "login.html",
        status=status,
        next_path=next_path,
        email=email,
        error=error,
        login_token=token,
    )
    response.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict", max_age=3600)
    return response


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: str = "/", lang: str | None = None) -> Response:
    mark_console(request)
    if lang in LOCALES:  # the language links on the login page
        response = RedirectResponse(f"/login?next={_safe_next(next)}", status_code=303)
        response.set_cookie(LANG_COOKIE, lang, samesite="lax", max_age=365 * 86400)
        return response
    return _login_page(request, next_path=_safe_next(next))


@router.post("/login")
def login(
    request: Request,
    engine: EngineDep,
    email: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/",
    login_token: Annotated[str, Form()] = "",
) -> Response:
    mark_console(request)
    gettext = translations(locale_of(request, None)).gettext
    expected = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not expected or not hmac.compare_digest(expected, login_token):
        error = gettext("The sign-in form expired; please try again.")
        return _login_page(request, next_path=_safe_next(next), email=email, error=error, status=400)
    try:
        with engine.begin() as conn:
            user = authenticate(conn, email=email, password=password)
            session, secret = open_session(conn, user)
            record_action(
                conn, session.workspace_id, user_id=user.id, action="session.login", target=user.email
            )
    except Unauthorized:
        error = gettext("Wrong e-mail or password.")
        return _login_page(request, next_path=_safe_next(next), email=email, error=error, status=401)
    except Forbidden:
        error = gettext("This account belongs to no workspace yet; ask an admin to add it.")
        return _login_page(request, next_path=_safe_next(next), email=email, error=error, status=403)
    response = RedirectResponse(_safe_next(next), status_code=303)
    response.set_cookie(
        COOKIE,
        secret,
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
        max_age=int(SESSION_LIFETIME.total_seconds()),
    )
    response.delete_cookie(LOGIN_CSRF_COOKIE)
    return response


@router.post("/logout")
def logout(request: Request, session: Reader, engine: EngineDep) -> Response:
    with engine.begin() as conn:
        close_session(conn, request.cookies.get(COOKIE, ""))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE)
    return response


@router.post("/preferences/locale")
def choose_locale(
    session: Reader, engine: EngineDep, locale: Annotated[str, Form()], next: Annotated[str, Form()] = "/"
) -> Response:
    with engine.begin() as conn:
        set_preferences(conn, session.user.id, locale=locale)
    response = RedirectResponse(_safe_next(next), status_code=303)
    response.set_cookie(LANG_COOKIE, locale, samesite="lax", max_age=365 * 86400)
    return response
