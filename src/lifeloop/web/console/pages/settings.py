"""Settings: the workspace's members and their roles, API tokens, the audit log, the reader's own profile."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import Connection

from lifeloop.accounts.service import (
    add_member,
    audit_entries,
    create_user,
    list_members,
    record_action,
    remove_member,
    set_preferences,
    user_by_email,
)
from lifeloop.errors import LifeloopError, NotFound
from lifeloop.web.console.auth import Admin, Reader
from lifeloop.web.console.i18n import translations
from lifeloop.web.console.pages.data import fresh
from lifeloop.web.console.render import page
from lifeloop.web.deps import Conn, EngineDep
from lifeloop.workspaces.models import ROLES
from lifeloop.workspaces.service import create_api_token, get_workspace, list_api_tokens, revoke_api_token

router = APIRouter(include_in_schema=False)


def _settings_page(
    request: Request,
    session: Reader,
    conn: Connection,
    *,
    flash: str = "",
    error: bool = False,
    status: int = 200,
    **extra: object,
) -> HTMLResponse:
    admin = session.role == "admin"
    fresh(conn)
    return page(
        request,
        session,
        "settings.html",
        status=status,
        workspace=get_workspace(conn, session.workspace_id),
        members=list_members(conn, session.workspace_id),
        tokens=list_api_tokens(conn, session.workspace_id) if admin else [],
        audit=audit_entries(conn, session.workspace_id, limit=50) if admin else [],
        roles=ROLES,
        flash=flash,
        flash_kind="error" if error else "",
        new_token=extra.get("new_token"),
    )


@router.get("/settings", response_class=HTMLResponse)
def settings(request: Request, session: Reader, conn: Conn) -> HTMLResponse:
    return _settings_page(request, session, conn)


@router.post("/settings/members", response_class=HTMLResponse)
def add_or_change_member(
    request: Request,
    session: Admin,
    engine: EngineDep,
    conn: Conn,
    email: Annotated[str, Form()],
    role: Annotated[str, Form()],
    name: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
) -> Response:
    gettext = translations(session.user.locale).gettext
    try:
        with engine.begin() as tx:
            try:
                user = user_by_email(tx, email)
            except NotFound:
                user = create_user(
                    tx, email=email, password=password, name=name or None, locale=session.user.locale
                )
            add_member(tx, session.workspace_id, user_id=user.id, role=role)
            record_action(tx, session.workspace_id, user_id=session.user.id, action="member.set",
                          target=user.email, detail={"role": role})  # fmt: skip
    except LifeloopError as failure:
        return _settings_page(
            request, session, conn, flash=failure.message, error=True, status=failure.status
        )
    return _settings_page(request, session, conn, flash=gettext("Saved."))


@router.post("/settings/members/{user_id}/remove", response_class=HTMLResponse)
def remove(request: Request, user_id: int, session: Admin, engine: EngineDep, conn: Conn) -> Response:
    gettext = translations(session.user.locale).gettext
    try:
        with engine.begin() as tx:
            remove_member(tx, session.workspace_id, user_id)
            record_action(tx, session.workspace_id, user_id=session.user.id, action="member.remove",
                          target=str(user_id))  # fmt: skip
    except LifeloopError as failure:
        return _settings_page(
            request, session, conn, flash=failure.message, error=True, status=failure.status
        )
    return _settings_page(request, session, conn, flash=gettext("Removed."))


@router.post("/settings/tokens", response_class=HTMLResponse)
def new_token(
    request: Request,
    session: Admin,
    engine: EngineDep,
    conn: Conn,
    name: Annotated[str, Form()],
    role: Annotated[str, Form()],
) -> Response:
    try:
        with engine.begin() as tx:
            token, secret = create_api_token(tx, session.workspace_id, name=name, role=role)
            record_action(tx, session.workspace_id, user_id=session.user.id, action="token.create",
                          target=token.name, detail={"role": role, "prefix": token.token_prefix})  # fmt: skip
    except LifeloopError as failure:
        return _settings_page(
            request, session, conn, flash=failure.message, error=True, status=failure.status
        )
    return _settings_page(request, session, conn, new_token=secret)


@router.post("/settings/tokens/{token_id}/revoke", response_class=HTMLResponse)
def revoke(request: Request, token_id: int, session: Admin, engine: EngineDep, conn: Conn) -> Response:
    gettext = translations(session.user.locale).gettext
    try:
        with engine.begin() as tx:
            revoke_api_token(tx, session.workspace_id, token_id)
            record_action(tx, session.workspace_id, user_id=session.user.id, action="token.revoke",
                          target=str(token_id))  # fmt: skip
    except LifeloopError as failure:
        return _settings_page(
            request, session, conn, flash=failure.message, error=True, status=failure.status
        )
    return _settings_page(request, session, conn, flash=gettext("Revoked."))


@router.post("/settings/profile")
def profile(session: Reader, engine: EngineDep, timezone: Annotated[str, Form()] = "") -> Response:
    with engine.begin() as tx:
        set_preferences(tx, session.user.id, timezone=timezone)
    return RedirectResponse("/settings", status_code=303)
