"""REST: /api/v1/journeys — drafts, publishing, status, manual entry, statistics, playbooks, dry runs."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Header
from pydantic import BaseModel, Field

from lifeloop.errors import InvalidInput
from lifeloop.journeys import service
from lifeloop.journeys.definition import json_schema
from lifeloop.web.deps import Conn, CurrentGrant, EngineDep, require_role

router = APIRouter(prefix="/api/v1/journeys", tags=["journeys"])
profile_router = APIRouter(prefix="/api/v1/profiles", tags=["journeys"])

WRITERS = ("admin", "operator")


class JourneySource(BaseModel):
    definition: dict[str, Any] | None = Field(None, description="The definition as JSON.")
    yaml: str | None = Field(None, description="…or as YAML text.")

    def source(self) -> str | dict[str, Any]:
        if (self.definition is None) == (self.yaml is None):
            raise InvalidInput(
                "give the definition as JSON (definition) or as YAML text (yaml)", field="definition"
            )
        return self.definition if self.definition is not None else str(self.yaml)


class EntryBody(BaseModel):
    profile_ids: list[int] | None = Field(None, max_length=10_000)
    segment: str | None = Field(None, description="Enter every member of this segment.")
    properties: dict[str, Any] = Field(default_factory=dict, description="Read as property.… and event.….")


class PlaybookInstall(BaseModel):
    publish: bool = Field(False, description="Publish (switch on) the journey at once.")


class DryRunBody(BaseModel):
    days: int = Field(30, ge=1, le=365, description="Replay the stored events of the last N days.")
    version: str = Field("draft", description='"draft" or a published version number.')


@router.get("")
def list_journeys(conn: Conn, grant: CurrentGrant, status: str | None = None) -> list[dict[str, Any]]:
    return [j.as_dict() for j in service.list_journeys(conn, grant.workspace_id, status=status)]


@router.get("/schema")
def definition_schema() -> dict[str, Any]:
    """The JSON Schema of a journey definition."""
    return json_schema()


@router.get("/playbooks")
def list_playbooks(grant: CurrentGrant) -> list[dict[str, Any]]:
    from lifeloop.journeys.playbooks import list_playbooks as playbooks

    return playbooks()


@router.post("/playbooks/{playbook}", status_code=201)
def install_playbook(
    playbook: str, body: PlaybookInstall, engine: EngineDep, grant: CurrentGrant
) -> dict[str, Any]:
    """Install a playbook: its templates, segments and journey (a draft, or published with publish)."""
    from lifeloop.journeys.playbooks import install_playbook as install

    require_role(grant, *WRITERS)
    with engine.begin() as conn:
        journey = install(conn, grant.workspace_id, playbook, publish=body.publish)
    return journey.as_dict()


@router.post("", status_code=201)
def save_journey(body: JourneySource, engine: EngineDep, grant: CurrentGrant) -> dict[str, Any]:
    """Create a journey as a draft, or replace the draft of the journey with that key."""
    require_role(grant, *WRITERS)
    with engine.begin() as conn:
        return service.save_draft(conn, grant.workspace_id, body.source()).as_dict()


@router.get("/{key}")
def get_journey(key: str, conn: Conn, grant: CurrentGrant) -> dict[str, Any]:
    return service.get_journey(conn, grant.workspace_id, key).as_dict()


@router.put("/{key}/draft")
def put_draft(key: str, body: JourneySource, engine: EngineDep, grant: CurrentGrant) -> dict[str, Any]:
    require_role(grant, *WRITERS)
    source = body.source()
    from lifeloop.journeys.definition import load_definition

    if load_definition(source).key != key:
        raise InvalidInput(f"the definition's key must be {key!r}", field="key")
    with engine.begin() as conn:
        return service.save_draft(conn, grant.workspace_id, source).as_dict()


@router.post("/{key}/publish")
def publish(key: str, engine: EngineDep, grant: CurrentGrant) -> dict[str, Any]:
    """The draft becomes a new version and the journey is active; runs inside keep their version."""
    require_role(grant, *WRITERS)
    with engine.begin() as conn:
        return service.publish(conn, grant.workspace_id, key, by=f"token:{grant.token_id}").as_dict()


def _status(engine: Any, grant: Any, key: str, status: str) -> dict[str, Any]:
    require_role(grant, *WRITERS)
    with engine.begin() as conn:
        return service.set_status(conn, grant.workspace_id, key, status).as_dict()


@router.post("/{key}/pause")
def pause(key: str, engine: EngineDep, grant: CurrentGrant) -> dict[str, Any]:
    """No new entries; runs inside wait until the journey is resumed."""
    return _status(engine, grant, key, "paused")


@router.post("/{key}/resume")
def resume(key: str, engine: EngineDep, grant: CurrentGrant) -> dict[str, Any]:
    return _status(engine, grant, key, "active")


@router.post("/{key}/archive")
def archive(key: str, engine: EngineDep, grant: CurrentGrant) -> dict[str, Any]:
    """For good: every run inside leaves (reason archived)."""
    return _status(engine, grant, key, "archived")


@router.get("/{key}/versions")
def versions(key: str, conn: Conn, grant: CurrentGrant) -> list[dict[str, Any]]:
    return service.versions(conn, grant.workspace_id, key)


@router.get("/{key}/versions/{version}")
def version(key: str, version: int, conn: Conn, grant: CurrentGrant) -> dict[str, Any]:
    return service.version_definition(conn, grant.workspace_id, key, version)


@router.post("/{key}/entries", status_code=202)
def enter(
    key: str,
    body: EntryBody,
    engine: EngineDep,
    grant: CurrentGrant,
    idempotency_key: str | None = Header(None, description="The same key again enters nobody twice."),
) -> dict[str, Any]:
    """Enter profiles or a segment's members; runs start at once (a worker takes large entries)."""
    require_role(grant, *WRITERS)
    request_key = idempotency_key or uuid.uuid4().hex
    with engine.begin() as conn:
        ids = service.enter_profiles(
            conn,
            grant.workspace_id,
            key,
            profile_ids=body.profile_ids,
            segment=body.segment,
            idempotency_key=request_key,
            properties=body.properties,
        )
        if 0 < len(ids) <= 100:
            from lifeloop.store.schema import utcnow

            service.advance_now(conn, grant.workspace_id, ids, now=utcnow())
    return {"entered": len(ids), "idempotency_key": request_key}


@router.get("/{key}/stats")
def stats(key: str, conn: Conn, grant: CurrentGrant, version: int | None = None) -> dict[str, Any]:
    """Entered, at each step, waiting, converted, exits by reason, messages, A/B against the holdout."""
    from lifeloop.journeys.stats import journey_stats

    return journey_stats(conn, grant.workspace_id, key, version=version)


@router.post("/{key}/dry-run")
def dry_run(key: str, body: DryRunBody, conn: Conn, grant: CurrentGrant) -> dict[str, Any]:
    """Replay stored events through the draft (or a version) without writing or sending anything."""
    from lifeloop.journeys.dry_run import dry_run as replay

    return replay(conn, grant.workspace_id, key, days=body.days, version=body.version)


@profile_router.get("/{profile_id}/journeys")
def profile_journeys(profile_id: int, conn: Conn, grant: CurrentGrant) -> list[dict[str, Any]]:
    """A customer's journeys: every run, newest first."""
    from lifeloop.profiles.service import resolve_profile_id

    return service.profile_runs(
        conn, grant.workspace_id, resolve_profile_id(conn, grant.workspace_id, profile_id)
    )
