"""REST: /api/v1/broadcasts — drafts, the audience estimate, scheduling, cancelling, statistics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from lifeloop.broadcasts import service
from lifeloop.broadcasts.definition import parse_definition
from lifeloop.web.deps import Conn, CurrentGrant, EngineDep, require_role

router = APIRouter(prefix="/api/v1/broadcasts", tags=["broadcasts"])

WRITERS = ("admin", "operator")  # an analyst or viewer can read and estimate, not send


class BroadcastCreate(BaseModel):
    key: str = Field(description="Lower-case letters, digits, _ or -; unique in the workspace.")
    name: str
    definition: dict[str, Any] = Field(
        description="audience, channels or variants, holdout, schedule, conversion"
    )


class BroadcastUpdate(BaseModel):
    name: str | None = None
    definition: dict[str, Any] | None = None


class EstimateBody(BaseModel):
    definition: dict[str, Any]


@router.get("")
def list_broadcasts(conn: Conn, grant: CurrentGrant, status: str | None = None) -> list[dict[str, Any]]:
    return [b.as_dict() for b in service.list_broadcasts(conn, grant.workspace_id, status=status)]


@router.post("", status_code=201)
def create_broadcast(body: BroadcastCreate, engine: EngineDep, grant: CurrentGrant) -> dict[str, Any]:
    """A draft: nothing is sent until it is scheduled."""
    require_role(grant, *WRITERS)
    with engine.begin() as conn:
        broadcast = service.create_broadcast(
            conn, grant.workspace_id, key=body.key, name=body.name, definition=body.definition
        )
    return broadcast.as_dict()


@router.post("/estimate")
def estimate_definition(body: EstimateBody, conn: Conn, grant: CurrentGrant) -> dict[str, Any]:
    """Who a definition would reach, without saving it."""
    return service.estimate(conn, grant.workspace_id, parse_definition(body.definition))


@router.get("/{key}")
def get_broadcast(key: str, conn: Conn, grant: CurrentGrant) -> dict[str, Any]:
    return service.get_broadcast(conn, grant.workspace_id, key).as_dict()


@router.patch("/{key}")
def update_broadcast(
    key: str, body: BroadcastUpdate, engine: EngineDep, grant: CurrentGrant
) -> dict[str, Any]:
    """Change a draft's name or definition."""
    require_role(grant, *WRITERS)
    with engine.begin() as conn:
        broadcast = service.update_broadcast(
            conn, grant.workspace_id, key, name=body.name, definition=body.definition
        )
    return broadcast.as_dict()


@router.get("/{key}/estimate")
def estimate(key: str, conn: Conn, grant: CurrentGrant) -> dict[str, Any]:
    """Members, holdout, reachable per channel, consent, and the policy's expected outcome per message."""
    broadcast = service.get_broadcast(conn, grant.workspace_id, key)
    return service.estimate(conn, grant.workspace_id, broadcast.parsed(), broadcast_id=broadcast.id)


@router.post("/{key}/schedule")
def schedule(key: str, engine: EngineDep, grant: CurrentGrant) -> dict[str, Any]:
    """Send it at its time ("now": at the next worker tick), after every check that could stop it."""
    require_role(grant, *WRITERS)
    with engine.begin() as conn:
        return service.schedule_broadcast(conn, grant.workspace_id, key).as_dict()


@router.post("/{key}/cancel")
def cancel(key: str, engine: EngineDep, grant: CurrentGrant) -> dict[str, Any]:
    """Stop what has not gone out: queued messages are suppressed with the reason "broadcast cancelled"."""
    require_role(grant, *WRITERS)
    with engine.begin() as conn:
        return service.cancel_broadcast(conn, grant.workspace_id, key)


@router.get("/{key}/stats")
def stats(key: str, conn: Conn, grant: CurrentGrant) -> dict[str, Any]:
    """Audience, sent, failed, suppressed and deferred by reason, clicks, replies, conversions and revenue
    per variant, and each variant against the holdout."""
    from lifeloop.broadcasts.stats import broadcast_stats

    return broadcast_stats(conn, grant.workspace_id, key)
