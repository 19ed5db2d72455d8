"""Who is signed in to the console, what their role lets them do, and CSRF protection of every write.

A session is a random secret in an HttpOnly, SameSite=Lax cookie; the database keeps only its SHA-256.
Every form and htmx request that changes something carries the session's CSRF token (a hidden field or
the ``X-CSRF-Token`` header), compared in constant time.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import Connection

from lifeloop.accounts.models import PERMISSIONS, ConsoleSession
from lifeloop.accounts.service import session_for
from lifeloop.errors import Forbidden, Unauthorized
from lifeloop.web.deps import Conn

COOKIE = "lifeloop_session"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
_SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


class LoginRequired(Exception):
    """Not signed in (or the session ended): the console sends the browser to the login page."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


def mark_console(request: Request) -> None:
    """Errors on console pages are shown as pages, not as JSON problems."""
    request.state.console = True


def _session(request: Request, conn: Connection) -> ConsoleSession:
    mark_console(request)
    try:
        session = session_for(conn, request.cookies.get(COOKIE))
    except Unauthorized:
        raise LoginRequired(
            request.url.path + (f"?{request.url.query}" if request.url.query else "")
        ) from None
    request.state.session = session
    return session


async def _check_csrf(request: Request, session: ConsoleSession) -> None:
    if request.method in _SAFE_METHODS:
        return
    sent = request.headers.get(CSRF_HEADER)
    if sent is None:
        form = await request.form()  # Starlette keeps the parsed form for the route
        value = form.get(CSRF_FIELD)
        sent = value if isinstance(value, str) else None
    if not sent or not hmac.compare_digest(sent, session.csrf_token):
        raise Forbidden(
            "the form is out of date or was not sent by this console (CSRF); reload and try again"
        )


def allowed(session: ConsoleSession, permission: str) -> bool:
    return permission in PERMISSIONS.get(session.role, frozenset())


def requires(permission: str) -> Callable[..., object]:
    """A dependency: the signed-in session, if its role has ``permission`` (403 otherwise); writes must
    also carry the CSRF token."""

    async def dependency(request: Request, conn: Conn) -> ConsoleSession:
        session = _session(request, conn)
        if not allowed(session, permission):
            raise Forbidden(f"your role ({session.role}) may not do this; it needs {_NEEDED[permission]}")
        await _check_csrf(request, session)
        return session

    return dependency


_NEEDED = {
    "read": "any role",
    "analyse": "analyst, operator or admin",
    "edit": "operator or admin",
    "send": "operator or admin",
    "admin": "admin",
}

Reader = Annotated[ConsoleSession, Depends(requires("read"))]
Analyst = Annotated[ConsoleSession, Depends(requires("analyse"))]
Editor = Annotated[ConsoleSession, Depends(requires("edit"))]
Sender = Annotated[ConsoleSession, Depends(requires("send"))]
Admin = Annotated[ConsoleSession, Depends(requires("admin"))]
