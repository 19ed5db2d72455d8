"""REST: /api/v1/workspace/members and /audit — what the console's settings page does, for admins' tokens."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from lifeloop.accounts import service
from lifeloop.accounts.models import Member
from lifeloop.errors import NotFound
from lifeloop.web.deps import Conn, CurrentGrant, EngineDep, require_role

router = APIRouter(prefix="/api/v1/workspace", tags=["workspace"])


class MemberPut(BaseModel):
    email: str
    role: str = Field(description="admin, operator, analyst or viewer")
    name: str | None = None
    password: str | None = Field(default=None, description="Needed only when the account is new.")
    locale: str = "zh-TW"


class MemberOut(BaseModel):
    user_id: int
    email: str
    name: str
    role: str
    locale: str


class AuditOut(BaseModel):
    id: int
    user_email: str | None
    action: str
    target: str
    detail: dict[str, Any]
    at: datetime


def _member_out(member: Member) -> MemberOut:
    user = member.user
    return MemberOut(user_id=user.id, email=user.email, name=user.name, role=member.role, locale=user.locale)


@router.get("/members", response_model=list[MemberOut])
def list_members(conn: Conn, grant: CurrentGrant) -> list[MemberOut]:
    require_role(grant, "admin")
    return [_member_out(m) for m in service.list_members(conn, grant.workspace_id)]


@router.put("/members", response_model=MemberOut)
def put_member(body: MemberPut, engine: EngineDep, grant: CurrentGrant) -> MemberOut:
    """Give a user a role here, creating the account when the e-mail is new (then ``password`` is needed)."""
    require_role(grant, "admin")
    with engine.begin() as conn:
        try:
            user = service.user_by_email(conn, body.email)
        except NotFound:
            user = service.create_user(
                conn, email=body.email, password=body.password or "", name=body.name, locale=body.locale
            )
        member = service.add_member(conn, grant.workspace_id, user_id=user.id, role=body.role)
        service.record_action(conn, grant.workspace_id, user_id=None, action="member.set", target=user.email,
                              detail={"role": body.role, "token_id": grant.token_id})  # fmt: skip
    return _member_out(member)


@router.delete("/members/{user_id}", status_code=204)
def delete_member(user_id: int, engine: EngineDep, grant: CurrentGrant) -> Response:
    require_role(grant, "admin")
    with engine.begin() as conn:
        service.remove_member(conn, grant.workspace_id, user_id)
        service.record_action(conn, grant.workspace_id, user_id=None, action="member.remove",
                              target=str(user_id), detail={"token_id": grant.token_id})  # fmt: skip
    return Response(status_code=204)


@router.get("/audit", response_model=list[AuditOut])
def audit(conn: Conn, grant: CurrentGrant, limit: int = 100) -> list[AuditOut]:
    """The newest operator actions first (admin)."""
    require_role(grant, "admin")
    entries = service.audit_entries(conn, grant.workspace_id, limit=max(1, min(limit, 1000)))
    return [AuditOut(**{name: getattr(e, name) for name in AuditOut.model_fields}) for e in entries]
