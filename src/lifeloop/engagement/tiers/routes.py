"""REST: /api/v1/tiers — the ladder and its rules, a customer's tier with progress, and its history."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from lifeloop.engagement.tiers import service
from lifeloop.store.engine import transaction
from lifeloop.store.schema import utcnow
from lifeloop.web.deps import Conn, CurrentGrant, EngineDep, require_role

router = APIRouter(prefix="/api/v1/tiers", tags=["tiers"])

WRITERS = ("admin", "operator")


class ProgramBody(BaseModel):
    config: dict[str, Any] = Field(
        description="tiers (lowest first: key, name, min_spend, min_points, benefits, points_multiplier, "
        "upgrade_coupons, member_day_coupons), window_days, match, points_per_unit, review, downgrade, "
        "member_day"
    )


@router.get("/program")
def get_program(conn: Conn, grant: CurrentGrant) -> dict[str, Any]:
    return service.require_program(conn, grant.workspace_id).as_dict()


@router.put("/program")
def set_program(body: ProgramBody, engine: EngineDep, grant: CurrentGrant) -> dict[str, Any]:
    """Save the ladder and its rules; members keep their tier until an order raises it or a review
    lowers it."""
    require_role(grant, *WRITERS)
    program = transaction(
        engine, lambda conn: service.set_program(conn, grant.workspace_id, body.config, now=utcnow())
    )
    return program.as_dict()


@router.get("/profiles/{profile_id}")
def profile_tier(profile_id: int, conn: Conn, grant: CurrentGrant) -> dict[str, Any]:
    """The customer's tier, since when, the window's spend and points, and what the next tier asks."""
    return service.status(conn, grant.workspace_id, profile_id, now=utcnow())


@router.get("/profiles/{profile_id}/history")
def profile_history(profile_id: int, conn: Conn, grant: CurrentGrant) -> list[dict[str, Any]]:
    return service.history(conn, grant.workspace_id, profile_id)
