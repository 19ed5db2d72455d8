"""REST: /api/v1/tags (rules, event-tag rules, presets, manual tags) and /api/v1/segments."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import StreamingResponse
from pydantic import AwareDatetime, BaseModel, Field

from lifeloop.audience import batch, definitions, query, service
from lifeloop.profiles.service import resolve_profile_id
from lifeloop.store.schema import utcnow
from lifeloop.web.deps import AnalyticsPathDep, Conn, CurrentGrant, EngineDep, require_role

tags_router = APIRouter(prefix="/api/v1/tags", tags=["tags"])
segments_router = APIRouter(prefix="/api/v1/segments", tags=["segments"])
router = APIRouter()

WRITERS = ("admin", "operator")


class TagRuleBody(BaseModel):
    condition: str = Field(description='e.g. sum("Order Completed", "revenue", within="365d") >= 2000')
    description: str | None = None
    emit_on_add: str | None = Field(None, description="An extra event recorded when the tag is added.")


class EventTagRuleBody(BaseModel):
    event: str = Field(description='e.g. "Channel Followed", "Page Viewed"')
    property: str = Field(description='A property path, e.g. "source" or "product.category".')
    prefix: str = Field(description="Tags are <prefix>:<value>.")
    ttl: str | None = Field(
        None, description='How long a tag lasts after the event, e.g. "30d"; none: for good.'
    )


class PresetBody(BaseModel):
    preset: str = Field(description="line (seed 000 event tags) or wecom (seed 001 vip rule tag).")


class ManualTagBody(BaseModel):
    tag: str
    expires_at: AwareDatetime | None = None


class SegmentCreate(BaseModel):
    key: str = Field(description='What in_segment("key") names: lowercase letters, digits, _ and -.')
    name: str | None = None
    description: str | None = None
    condition: str


class SegmentUpdate(BaseModel):
    name: str | None = None
    description: str | None = None
    condition: str | None = None


class PreviewBody(BaseModel):
    condition: str
    limit: int = 20


def _changes(changes: list[service.Change]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for change in changes:
        counts[change.action] = counts.get(change.action, 0) + 1
    return counts


# --- tags ---------------------------------------------------------------------------------------
@tags_router.get("")
def list_tags(conn: Conn, grant: CurrentGrant) -> list[dict[str, Any]]:
    return query.tag_counts(conn, grant.workspace_id, utcnow())


@tags_router.get("/rules")
def list_tag_rules(conn: Conn, grant: CurrentGrant) -> dict[str, Any]:
    return {
        "tag_rules": definitions.list_tag_rules(conn, grant.workspace_id),
        "event_tag_rules": definitions.list_event_tag_rules(conn, grant.workspace_id),
    }


@tags_router.put("/rules/{tag}")
def put_tag_rule(tag: str, body: TagRuleBody, engine: EngineDep, grant: CurrentGrant) -> dict[str, Any]:
    """Create or replace a rule tag; profiles are tagged (or untagged) at once."""
    require_role(grant, *WRITERS)
    with engine.begin() as conn:
        row, definition = definitions.put_tag_rule(
            conn,
            grant.workspace_id,
            tag,
            body.condition,
            description=body.description,
            emit_on_add=body.emit_on_add,
        )
    changes = batch.after_definition_change(engine, grant.workspace_id, definition)
    return {**row, "changes": _changes(changes)}


@tags_router.delete("/rules/{tag}", status_code=204)
def delete_tag_rule(tag: str, engine: EngineDep, grant: CurrentGrant, copy: AnalyticsPathDep) -> Response:
    """Delete a rule; the tags it gave are removed (with ``Tag Removed`` events)."""
    require_role(grant, *WRITERS)
    with engine.begin() as conn:
        definitions.delete_tag_rule(conn, grant.workspace_id, tag)
    batch.recompute_audience(engine, grant.workspace_id, event_tags=False, analytics_path=copy)
    return Response(status_code=204)


@tags_router.post("/event-rules", status_code=201)
def add_event_tag_rule(body: EventTagRuleBody, engine: EngineDep, grant: CurrentGrant) -> dict[str, Any]:
    """Applies to events placed from now on; ``lifeloop recompute`` applies it to the past."""
    require_role(grant, *WRITERS)
    with engine.begin() as conn:
        return definitions.add_event_tag_rule(
            conn, grant.workspace_id, body.event, body.property, body.prefix, body.ttl
        )


@tags_router.delete("/event-rules/{rule_id}", status_code=204)
def delete_event_tag_rule(rule_id: int, engine: EngineDep, grant: CurrentGrant) -> Response:
    require_role(grant, *WRITERS)
    with engine.begin() as conn:
        definitions.delete_event_tag_rule(conn, grant.workspace_id, rule_id)
    return Response(status_code=204)


@tags_router.post("/presets", status_code=201)
def install_preset(
    body: PresetBody, engine: EngineDep, grant: CurrentGrant, copy: AnalyticsPathDep
) -> dict[str, Any]:
    require_role(grant, *WRITERS)
    with engine.begin() as conn:
        installed = definitions.install_preset(conn, grant.workspace_id, body.preset)
    if installed["tag_rules"]:
        batch.recompute_audience(engine, grant.workspace_id, event_tags=False, analytics_path=copy)
    return installed


@tags_router.get("/profiles/{profile_id}")
def profile_tags(profile_id: int, conn: Conn, grant: CurrentGrant) -> list[dict[str, Any]]:
    resolve_profile_id(conn, grant.workspace_id, profile_id)  # 404 for a profile of another workspace
    return query.profile_tag_list(conn, grant.workspace_id, profile_id, utcnow())


@tags_router.post("/profiles/{profile_id}", status_code=201)
def add_manual_tag(
    profile_id: int, body: ManualTagBody, engine: EngineDep, grant: CurrentGrant
) -> dict[str, Any]:
    require_role(grant, *WRITERS)
    with engine.begin() as conn:
        changes = service.add_manual_tag(
            conn, grant.workspace_id, profile_id, body.tag, expires_at=body.expires_at
        )
    return {"tag": body.tag, "expires_at": body.expires_at, "changes": _changes(changes)}


@tags_router.delete("/profiles/{profile_id}/{tag}")
def remove_manual_tag(profile_id: int, tag: str, engine: EngineDep, grant: CurrentGrant) -> dict[str, Any]:
    require_role(grant, *WRITERS)
    with engine.begin() as conn:
        changes = service.remove_manual_tag(conn, grant.workspace_id, profile_id, tag)
    return {"tag": tag, "changes": _changes(changes)}


# --- segments -----------------------------------------------------------------------------------
@segments_router.get("")
def list_segments(conn: Conn, grant: CurrentGrant) -> list[dict[str, Any]]:
    found = definitions.list_segments(conn, grant.workspace_id)
    return [{**s, "members": query.member_count(conn, grant.workspace_id, s["key"])} for s in found]


@segments_router.post("", status_code=201)
def create_segment(body: SegmentCreate, engine: EngineDep, grant: CurrentGrant) -> dict[str, Any]:
    """Validate and store; members are computed at once (``Segment Entered`` for each)."""
    require_role(grant, *WRITERS)
    with engine.begin() as conn:
        row, definition = definitions.create_segment(
            conn, grant.workspace_id, body.key, body.name, body.condition, body.description
        )
    batch.after_definition_change(engine, grant.workspace_id, definition)
    with engine.connect() as conn:
        return {**row, "members": query.member_count(conn, grant.workspace_id, body.key)}


@segments_router.post("/preview")
def preview(body: PreviewBody, conn: Conn, grant: CurrentGrant) -> dict[str, Any]:
    """Count and first profiles of a condition, without storing anything."""
    return query.preview(conn, grant.workspace_id, body.condition, now=utcnow(), limit=body.limit)


@segments_router.get("/{key}")
def get_segment(key: str, conn: Conn, grant: CurrentGrant) -> dict[str, Any]:
    row = definitions.get_segment(conn, grant.workspace_id, key)
    return {**row, "members": query.member_count(conn, grant.workspace_id, key)}


@segments_router.patch("/{key}")
def update_segment(key: str, body: SegmentUpdate, engine: EngineDep, grant: CurrentGrant) -> dict[str, Any]:
    require_role(grant, *WRITERS)
    with engine.begin() as conn:
        row, definition = definitions.update_segment(
            conn,
            grant.workspace_id,
            key,
            name=body.name,
            condition=body.condition,
            description=body.description,
        )
    batch.after_definition_change(engine, grant.workspace_id, definition)
    with engine.connect() as conn:
        return {**row, "members": query.member_count(conn, grant.workspace_id, key)}


@segments_router.delete("/{key}", status_code=204)
def delete_segment(key: str, engine: EngineDep, grant: CurrentGrant) -> Response:
    require_role(grant, *WRITERS)
    with engine.begin() as conn:
        definitions.delete_segment(conn, grant.workspace_id, key)
    return Response(status_code=204)


@segments_router.get("/{key}/count")
def count(key: str, conn: Conn, grant: CurrentGrant) -> dict[str, Any]:
    return {"key": key, "members": query.member_count(conn, grant.workspace_id, key)}


@segments_router.get("/{key}/preview")
def preview_members(key: str, conn: Conn, grant: CurrentGrant, limit: int = 20) -> dict[str, Any]:
    row = definitions.get_segment(conn, grant.workspace_id, key)
    return query.preview(conn, grant.workspace_id, row["condition"], now=utcnow(), limit=limit)


@segments_router.get("/{key}/export")
def export(key: str, conn: Conn, engine: EngineDep, grant: CurrentGrant) -> StreamingResponse:
    """Members as CSV (profile_id, user_id, email, traits as JSON), streamed."""
    segment_id = query.segment_id_of(conn, grant.workspace_id, key)
    stamp = utcnow().strftime("%Y%m%d")
    return StreamingResponse(
        query.export_csv(engine, grant.workspace_id, segment_id),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{key}-{stamp}.csv"'},
    )


router.include_router(tags_router)
router.include_router(segments_router)
