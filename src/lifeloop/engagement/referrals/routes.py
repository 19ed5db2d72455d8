"""REST: /api/v1/referrals — the programme, invite codes and links, attributions, a customer's
referrals and the leaderboard; and the public link ``/r/{code}``."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import RedirectResponse
from pydantic import BaseModel, Field

from lifeloop.engagement.referrals import service
from lifeloop.errors import InvalidInput
from lifeloop.store.engine import transaction
from lifeloop.store.schema import utcnow
from lifeloop.web.deps import Conn, CurrentGrant, EngineDep, require_role

router = APIRouter(prefix="/api/v1/referrals", tags=["referrals"])
links_router = APIRouter(tags=["referrals"])

WRITERS = ("admin", "operator")


class ProgramBody(BaseModel):
    config: dict[str, Any] = Field(description="landing_url, public_url, referrer_reward, referee_reward")


class AttributionBody(BaseModel):
    profile_id: int = Field(description="The new customer.")
    code: str = Field(description="The referrer's invite code.")
    device_id: str | None = Field(default=None, description="The new customer's device, for the guard.")


def _public_url(request: Request) -> str | None:
    return request.app.state.settings.public_url


@router.get("/program")
def get_program(conn: Conn, grant: CurrentGrant) -> dict[str, Any]:
    return service.require_program(conn, grant.workspace_id).as_dict()


@router.put("/program")
def set_program(body: ProgramBody, engine: EngineDep, grant: CurrentGrant) -> dict[str, Any]:
    require_role(grant, *WRITERS)
    program = transaction(
        engine, lambda conn: service.set_program(conn, grant.workspace_id, body.config, now=utcnow())
    )
    return program.as_dict()


@router.post("/profiles/{profile_id}/code")
def make_code(profile_id: int, request: Request, engine: EngineDep, grant: CurrentGrant) -> dict[str, Any]:
    """The customer's invite code and link (made on first asking; asking again returns the same)."""
    require_role(grant, *WRITERS)

    def work(conn: Any) -> dict[str, Any]:
        program = service.require_program(conn, grant.workspace_id)
        code = service.code_for(conn, grant.workspace_id, profile_id, now=utcnow())
        return {"code": code, "link": service.link_for(program, code, _public_url(request))}

    return transaction(engine, work)


@router.get("/profiles/{profile_id}")
def profile_referrals(profile_id: int, request: Request, conn: Conn, grant: CurrentGrant) -> dict[str, Any]:
    """The customer's code and link, whom they referred (with each one's status) and who referred them."""
    found = service.referrals_of(conn, grant.workspace_id, profile_id)
    program = service.get_program(conn, grant.workspace_id)
    code = found["code"]
    found["link"] = service.link_for(program, code, _public_url(request)) if program and code else None
    return found


@router.post("/attributions")
def attribute(
    body: AttributionBody,
    engine: EngineDep,
    grant: CurrentGrant,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> dict[str, Any]:
    """Attribute a new customer to a code (as an event carrying ``referral_code`` would). It may reward
    the new customer at once, so it takes an ``Idempotency-Key``: a repeat returns the first result."""
    require_role(grant, *WRITERS)
    if not idempotency_key:
        raise InvalidInput("an Idempotency-Key header is required", field="Idempotency-Key")
    referral = transaction(
        engine,
        lambda conn: service.attribute(
            conn,
            grant.workspace_id,
            body.profile_id,
            body.code,
            message_id=f"api:{idempotency_key}",
            device_id=body.device_id,
            now=utcnow(),
            strict=True,
        ),
    )
    assert referral is not None  # strict: refused with an error instead
    return referral


@router.get("/leaderboard")
def leaderboard(
    conn: Conn,
    grant: CurrentGrant,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 20,
) -> list[dict[str, Any]]:
    """Referrers by completed referrals in [since, until) (default: the last 30 days)."""
    until = _aware(until, "until") or utcnow()
    since = _aware(since, "since") or until - timedelta(days=30)
    return service.leaderboard(conn, grant.workspace_id, since=since, until=until, limit=limit)


def _aware(value: datetime | None, field: str) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise InvalidInput(f"{field} needs a time zone (e.g. 2026-12-01T00:00:00Z)", field=field)
    return value


@links_router.get("/r/{code}", include_in_schema=False)
def follow_link(code: str, conn: Conn) -> RedirectResponse:
    """A shared invite link: to the programme's landing page with ``?ref={code}`` (no sign-in)."""
    return RedirectResponse(service.landing_for(conn, code), status_code=302)
