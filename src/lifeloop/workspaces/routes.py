"""REST: /api/v1/workspace (the token's workspace), its sources and its API tokens."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from lifeloop.web.deps import Conn, CurrentGrant, EngineDep, require_role
from lifeloop.workspaces import service
from lifeloop.workspaces.models import ApiToken

router = APIRouter(prefix="/api/v1/workspace", tags=["workspace"])


class WorkspaceOut(BaseModel):
    id: int
    slug: str
    name: str
    timezone: str
    created_at: datetime


class SourceCreate(BaseModel):
    name: str = Field(min_length=1, max_length=200)


class SourceOut(BaseModel):
    id: int
    name: str
    write_key_prefix: str
    created_at: datetime
    disabled_at: datetime | None


class SourceCreated(SourceOut):
    write_key: str = Field(description="Shown only in this response; store it now.")


@router.get("", response_model=WorkspaceOut)
def get_workspace(conn: Conn, grant: CurrentGrant) -> WorkspaceOut:
    ws = service.get_workspace(conn, grant.workspace_id)
    return WorkspaceOut(id=ws.id, slug=ws.slug, name=ws.name, timezone=ws.timezone, created_at=ws.created_at)


@router.get("/sources", response_model=list[SourceOut])
def list_sources(conn: Conn, grant: CurrentGrant) -> list[SourceOut]:
    return [
        SourceOut(
            id=s.id,
            name=s.name,
            write_key_prefix=s.write_key_prefix,
            created_at=s.created_at,
            disabled_at=s.disabled_at,
        )
        for s in service.list_sources(conn, grant.workspace_id)
    ]


@router.post("/sources", response_model=SourceCreated, status_code=201)
def create_source(body: SourceCreate, engine: EngineDep, grant: CurrentGrant) -> SourceCreated:
    require_role(grant, "admin")
    with engine.begin() as conn:
        source, key = service.create_source(conn, grant.workspace_id, name=body.name)
    return SourceCreated(
        id=source.id,
        name=source.name,
        write_key_prefix=source.write_key_prefix,
        created_at=source.created_at,
        disabled_at=source.disabled_at,
        write_key=key,
    )


class TokenCreate(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    role: str = Field(description="admin, operator, analyst or viewer")


class TokenOut(BaseModel):
    id: int
    name: str
    role: str
    token_prefix: str
    created_at: datetime
    revoked_at: datetime | None


class TokenCreated(TokenOut):
    token: str = Field(description="Shown only in this response; store it now.")


def _token_out(token: ApiToken) -> TokenOut:
    return TokenOut(
        id=token.id,
        name=token.name,
        role=token.role,
        token_prefix=token.token_prefix,
        created_at=token.created_at,
        revoked_at=token.revoked_at,
    )


@router.get("/tokens", response_model=list[TokenOut])
def list_tokens(conn: Conn, grant: CurrentGrant) -> list[TokenOut]:
    """The workspace's API tokens (admin), never their secrets."""
    require_role(grant, "admin")
    return [_token_out(t) for t in service.list_api_tokens(conn, grant.workspace_id)]


@router.post("/tokens", response_model=TokenCreated, status_code=201)
def create_token(body: TokenCreate, engine: EngineDep, grant: CurrentGrant) -> TokenCreated:
    require_role(grant, "admin")
    with engine.begin() as conn:
        token, secret = service.create_api_token(conn, grant.workspace_id, name=body.name, role=body.role)
    return TokenCreated(**_token_out(token).model_dump(), token=secret)


@router.delete("/tokens/{token_id}", status_code=204)
def revoke_token(token_id: int, engine: EngineDep, grant: CurrentGrant) -> Response:
    """Revoke a token at once (admin)."""
    require_role(grant, "admin")
    with engine.begin() as conn:
        service.revoke_api_token(conn, grant.workspace_id, token_id)
    return Response(status_code=204)
