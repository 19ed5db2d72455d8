"""REST: /api/v1/profiles."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Query

from lifeloop.errors import InvalidInput
from lifeloop.profiles import service
from lifeloop.profiles.schemas import EventOut, EventPage, ProfileOut, ProfilePage, ProfileSummaryOut
from lifeloop.web.deps import Conn, CurrentGrant

router = APIRouter(prefix="/api/v1/profiles", tags=["profiles"])


@router.get("", response_model=ProfilePage)
def list_profiles(
    conn: Conn,
    grant: CurrentGrant,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    after: Annotated[int | None, Query(description="Return profiles with a larger id than this.")] = None,
) -> ProfilePage:
    rows = service.list_profiles(conn, grant.workspace_id, limit=limit + 1, after_id=after)
    page = rows[:limit]
    return ProfilePage(
        items=[ProfileSummaryOut(**r) for r in page], next_after=page[-1]["id"] if len(rows) > limit else None
    )


@router.get("/lookup", response_model=ProfileOut)
def lookup_profile(
    conn: Conn,
    grant: CurrentGrant,
    identity: Annotated[
        str, Query(description="kind:value, e.g. user_id:42, email:a@b.com, line_user_id:U1…")
    ],
) -> ProfileOut:
    kind, sep, value = identity.partition(":")
    if not sep or not value:
        raise InvalidInput("identity must look like kind:value, e.g. email:ann@example.com", field="identity")
    pid = service.find_by_identity(conn, grant.workspace_id, kind, value)
    return ProfileOut(**asdict(service.get_profile(conn, grant.workspace_id, pid)))


@router.get("/{profile_id}", response_model=ProfileOut)
def get_profile(profile_id: int, conn: Conn, grant: CurrentGrant) -> ProfileOut:
    """A profile with traits, identities and merges. A merged profile's id returns the survivor."""
    return ProfileOut(**asdict(service.get_profile(conn, grant.workspace_id, profile_id)))


@router.get("/{profile_id}/events", response_model=EventPage)
def profile_events(
    profile_id: int,
    conn: Conn,
    grant: CurrentGrant,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: str | None = None,
    event: Annotated[str | None, Query(description="Only track events of this name.")] = None,
) -> EventPage:
    """The profile's event timeline, newest first; pass ``next_cursor`` back for the next page."""
    rows, next_cursor = service.profile_timeline(
        conn, grant.workspace_id, profile_id, limit=limit, cursor=cursor, event_name=event
    )
    return EventPage(items=[EventOut(**r) for r in rows], next_cursor=next_cursor)
