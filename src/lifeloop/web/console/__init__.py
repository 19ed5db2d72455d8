"""The operators' console: server-rendered pages (Jinja2 + htmx, ECharts for charts) over the same domain
functions as the REST API. Pages add no logic and no SQL of their own; each lives in ``pages/``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from lifeloop.errors import LifeloopError
from lifeloop.store.engine import connect
from lifeloop.web.console.auth import LoginRequired
from lifeloop.web.console.i18n import N_
from lifeloop.web.console.pages import PAGE_ROUTERS
from lifeloop.web.console.render import page
from lifeloop.workspaces.service import get_workspace

STATIC_DIR = Path(__file__).parent / "static"
log = logging.getLogger("lifeloop.console")

_TITLES = {400: N_("Not accepted"), 403: N_("Not allowed"), 404: N_("Not found"), 409: N_("Conflict")}


def _error_page(request: Request, status: int, message: str) -> Response:
    session = getattr(request.state, "session", None)
    workspace = None
    if session is not None:
        with connect(request.app.state.engine) as conn:
            workspace = get_workspace(conn, session.workspace_id)
    from lifeloop.web.console.i18n import translations
    from lifeloop.web.console.render import locale_of

    gettext = translations(locale_of(request, session)).gettext
    title = gettext(_TITLES.get(status, N_("Something went wrong")))
    if status >= 500:
        message = gettext("An unexpected error occurred; nothing was changed.")
    return page(
        request, session, "error.html", status=status, workspace=workspace, title=title, message=message
    )


def install_console(app: FastAPI) -> None:
    """Serve the console at ``/`` beside the API; its errors are pages, the API's stay JSON problems."""
    app.mount("/console-static", StaticFiles(directory=STATIC_DIR), name="console-static")
    for router in PAGE_ROUTERS:
        app.include_router(router)

    api_domain_handler: Any = app.exception_handlers[LifeloopError]
    api_unexpected_handler: Any = app.exception_handlers[Exception]

    async def domain(request: Request, error: Exception) -> Response:
        if not getattr(request.state, "console", False):
            return cast(Response, await api_domain_handler(request, error))
        assert isinstance(error, LifeloopError)
        return _error_page(request, error.status, error.message)

    async def unexpected(request: Request, error: Exception) -> Response:
        if not getattr(request.state, "console", False):
            return cast(Response, await api_unexpected_handler(request, error))
        log.exception("console page failed", exc_info=error)
        return _error_page(request, 500, "An unexpected error occurred; nothing was changed.")

    async def login_required(request: Request, error: Exception) -> Response:
        assert isinstance(error, LoginRequired)
        target = "/login?next=" + quote(error.next_path, safe="")
        if request.headers.get("hx-request"):  # htmx follows HX-Redirect, not a 303 into its target
            return Response(status_code=401, headers={"HX-Redirect": target})
        return RedirectResponse(target, status_code=303)

    app.add_exception_handler(LifeloopError, domain)
    app.add_exception_handler(Exception, unexpected)
    app.add_exception_handler(LoginRequired, login_required)
