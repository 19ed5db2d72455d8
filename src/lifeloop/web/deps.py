"""FastAPI dependencies as Annotated aliases."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import Connection, Engine

from lifeloop.analytics.store import default_path
from lifeloop.errors import Forbidden
from lifeloop.store.engine import connect
from lifeloop.workspaces.models import TokenGrant
from lifeloop.workspaces.service import verify_api_token


def _engine(request: Request) -> Engine:
    return request.app.state.engine


def _connection(request: Request) -> Iterator[Connection]:
    """A read connection; routes that write open their own transaction with ``engine.begin()``."""
    with connect(request.app.state.engine) as conn:
        yield conn


def _grant(request: Request, conn: Annotated[Connection, Depends(_connection)]) -> TokenGrant:
    header = request.headers.get("authorization", "")
    scheme, _, secret = header.partition(" ")
    return verify_api_token(conn, secret.strip() if scheme.lower() == "bearer" else None)


EngineDep = Annotated[Engine, Depends(_engine)]


def analytics_path(request: Request) -> Path:
    """The app's analytics store: ``app.state.analytics_path``, else ``LIFELOOP_ANALYTICS_PATH``'s default."""
    return Path(getattr(request.app.state, "analytics_path", None) or default_path())


AnalyticsPathDep = Annotated[Path, Depends(analytics_path)]
Conn = Annotated[Connection, Depends(_connection)]
CurrentGrant = Annotated[TokenGrant, Depends(_grant)]


def require_role(grant: TokenGrant, *roles: str) -> None:
    if grant.role not in roles:
        raise Forbidden(f"this needs one of the roles {', '.join(roles)}; the token has {grant.role}")
